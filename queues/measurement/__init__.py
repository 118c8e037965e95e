"""What is counted and how it is summarised, with no I/O and no processes: latency histograms
(``histograms``), the correctness ledger (``ledger``), the run's summary (``summary``), spreads
of repeats (``spread``), the saturation search (``saturation``), clock offsets between machines
(``clocks``) and the environment a run records (``environment``). Imports ``queues.workload.spec``
and ``queues.errors`` only.
"""
