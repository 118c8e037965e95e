"""The workload a run is asked for, before anything runs: the validated spec (``spec``), the fault
texts it carries (``faults``), the event encoding producers and consumers share (``events``) and
the open-loop send schedule (``schedule``). Pure and I/O-free; imports only ``queues.errors``.
"""
