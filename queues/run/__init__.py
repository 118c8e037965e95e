"""One run from spec to result: the ``runner`` (workers, accounting, samples, the end of a run),
its ``accounting`` of the workers' reports, the final ``drain``, the in-process ``approaches``
and ``launch``, the one entry point that builds a backend from its alias and runs a spec.
Imports everything in ``queues`` below it (faults, workers, backends, measurement, workload).
"""
