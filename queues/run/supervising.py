"""What the runner asks of whoever runs its workers (``RunSupervisor``): the local
``queues.workers.supervision.Supervisor``, which forks them, or a distributed run's
``queues.distributed.coordinator.RemoteSupervisor``, which hands them to load hosts. A runner is
given a ``SupervisorFactory`` for the second kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from queues.faults.injectors import RunWorkers
from queues.workers.context import WorkerContext
from queues.workers.reports import Message


class RunSupervisor(RunWorkers, Protocol):
    """Spawn, the ready barrier, liveness, stop; and what a fault may do to a worker."""

    @property
    def replaced(self) -> int:
        """Workers started in a killed one's place."""

    @property
    def last_kill(self) -> float | None:
        """``time.monotonic()`` of the latest kill (``None``: none)."""

    def spawn(self, role: str, index: int) -> object: ...

    def await_ready(self) -> None: ...

    def pump(self, poll_s: float) -> None:
        """Read what the workers reported, waiting up to about ``poll_s``."""

    def check(self) -> None:
        """Raise ``QueueError`` when a worker failed or died for good."""

    def producers_done(self) -> bool: ...

    def stop(self) -> None: ...

    def reap(self) -> None: ...


#: Builds a run's supervisor from its workers' context, where their messages go (the
#: accounting) and how long a stop may take.
SupervisorFactory = Callable[[WorkerContext, Callable[[Message], None], float], RunSupervisor]
