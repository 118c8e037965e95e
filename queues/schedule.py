"""Open-loop send schedules: the intended send time of every event, fixed in advance.

A producer that falls behind sends late and records how late; it never moves the schedule
(wrk2, the OpenMessaging Benchmark and ``pgbench --rate`` measure the same way), so a stalled
queue shows up in the latency percentiles instead of being hidden (coordinated omission).
"""

from __future__ import annotations

import numpy as np

from queues.workload import WorkloadSpec


class Schedule:
    """Intended send offsets (ns after the run's start) of one producer's events."""

    def __init__(self, spec: WorkloadSpec, producer: int) -> None:
        if spec.rate_eps is None:
            raise ValueError("a burst has no schedule")
        self.count = spec.producer_shares()[producer][1]
        rate = spec.rate_eps / spec.producers
        if spec.arrival == "poisson":
            rng = np.random.default_rng([spec.seed, producer])
            gaps = rng.exponential(1e9 / rate, self.count)
            self.offsets_ns = np.cumsum(gaps).astype(np.int64)
        else:
            # producers interleave: producer p starts p/producers of an interval late
            start = producer / spec.producers
            self.offsets_ns = ((np.arange(self.count) + start) * (1e9 / rate)).astype(np.int64)

    def due(self, elapsed_ns: int) -> int:
        """How many events are due by ``elapsed_ns`` after the start."""
        return int(np.searchsorted(self.offsets_ns, elapsed_ns, side="right"))

    def offset_ns(self, index: int) -> int:
        return int(self.offsets_ns[index])
