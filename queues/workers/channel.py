"""A worker's way to the runner: its own report pipe (``ReportChannel``), read with ``receive``,
``RunnerGone`` once nobody reads it, and the lock-free start and stop flag (``SharedFlag``).
"""

from __future__ import annotations

import pickle
import time
from typing import Any

from queues.workers.reports import Message, from_wire, to_wire


class ReportChannel:
    """One worker's one-way pipe to the runner.

    Every worker has its own, so no lock is shared between processes: a worker SIGKILLed in the
    middle of a report cannot leave a lock held and the others blocked. ``send`` writes
    synchronously (no feeder thread as in ``multiprocessing.Queue``), so a report is in the
    kernel's pipe before the consumer acks: a SIGKILL right after cannot lose it.
    """

    def __init__(self, ctx: Any) -> None:
        self.reader, self.writer = ctx.Pipe(duplex=False)

    def send(self, message: Message) -> None:
        """Raises ``RunnerGone`` once the runner's end is closed (the runner died)."""
        try:
            # what ``Connection.send`` writes, without its ``ForkingPickler`` (2.3 us a report
            # against 0.3: it copies the reducer table at each call); ``recv`` reads either
            self.writer.send_bytes(pickle.dumps(to_wire(message), pickle.HIGHEST_PROTOCOL))
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise RunnerGone("the runner's report pipe is closed") from exc


class RunnerGone(Exception):
    """The runner is gone: nobody reads this worker's reports, so the worker ends."""


def receive(reader: Any) -> Message:
    """The next message on a ``ReportChannel``'s reader (blocks; ``EOFError`` once the worker
    is gone)."""
    return from_wire(reader.recv())


class SharedFlag:
    """A one-way flag between processes without a lock (``multiprocessing.Event`` takes a
    shared lock in ``is_set``: a worker SIGKILLed inside it would block every other worker and
    the runner). Waiting polls: it happens once per worker, at the start."""

    POLL_S = 0.0005

    def __init__(self, ctx: Any) -> None:
        self._value = ctx.Value("b", 0, lock=False)

    def set(self) -> None:
        self._value.value = 1

    def is_set(self) -> bool:
        return bool(self._value.value)

    def wait(self) -> None:
        while not self._value.value:
            time.sleep(self.POLL_S)
