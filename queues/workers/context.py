"""What a worker is given: the run's spec, backend, queue, report channel, flags and shared
counters (``WorkerContext``), inherited through fork.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from queues.workers.channel import ReportChannel
from queues.workload.spec import WorkloadSpec

if TYPE_CHECKING:  # workers drive a backend through its interface only: queues.backends is above them
    from queues.backends.base import Backend


@dataclass
class WorkerContext:
    """Everything a worker needs, inherited through fork (never pickled)."""

    spec: WorkloadSpec
    backend: Backend
    queue: str
    channel: ReportChannel
    start: Any  # SharedFlag (threading.Event for threads): producers begin
    stop: Any  # SharedFlag (threading.Event for threads): consumers finish, producers abandon the rest
    t0_ns: Any  # shared Value: the run's start on time.time_ns(), set before ``start``
    sent: Any  # shared Array: events sent so far, one slot per producer (read by the sampler)
    profile_dir: str | None = None  # write a cProfile of each worker there (bench/)
    #: Distributed runs (``queues.distributed.host``): shared Array, by producer index, of what a
    #: consumer adds to an event's latency to correct the clock offset between its host and
    #: the producer's (ns), set before ``start``. ``None`` on one machine: nothing added.
    latency_shift_ns: Any = None

    def window_ns(self) -> tuple[int, int]:
        """The measured window ``[start, end)`` of intended send times, in ns."""
        spec, t0 = self.spec, self.t0_ns.value
        if not spec.steady:
            return t0, 2**62
        begin = t0 + int(spec.warmup_s * 1e9)
        return begin, begin + int(spec.duration_s * 1e9)
