"""One run at a time on a machine, whoever executes it.

Two runs on one 2-core machine would take each other's CPU and disturb each other's figures.
The django-q2 cluster has one worker, but a second cluster, or a ``runexperiment`` in a terminal,
would still run beside it; so every executor takes an exclusive ``flock`` on one file
(``settings.IMQ_RUN_LOCK_PATH``) before its run starts and holds it until the run has ended.
The kernel drops the lock when the process dies, however it dies, so a killed executor never
leaves the machine locked. The run waits as ``queued`` meanwhile, and a cancel while it waits
sticks (``run_execute`` starts only a queued run).
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.conf import settings


@contextmanager
def one_run_at_a_time(*, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the machine's run lock in the block; ``on_wait`` is called once if another run
    holds it, before this one waits for it."""
    with open(settings.IMQ_RUN_LOCK_PATH, "a", encoding="ascii") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait()
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
