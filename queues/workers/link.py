"""A worker's producer or consumer on its backend, opened again with backoff when its connection
is lost (``Link``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from queues.errors import BackendUnavailable
from queues.workers.context import WorkerContext
from queues.workers.reports import Reconnected

#: A worker whose connection is lost opens a new one, waiting this long at first and twice as
#: long after each failed attempt, up to ``RECONNECT_MAX_PAUSE_S``; after ``RECONNECT_GIVE_UP_S``
#: without a connection it fails (and the run with it) with the last error.
RECONNECT_FIRST_PAUSE_S, RECONNECT_MAX_PAUSE_S, RECONNECT_GIVE_UP_S = 0.05, 2.0, 30.0


class Link:
    """A worker's producer or consumer (``client``), opened again when its connection is lost.

    A lost connection (``BackendUnavailable``: the server closed it, restarted, or the network
    dropped) costs the worker a reconnect with backoff, reported to the runner, not the run:
    what the server kept (un-acked messages return, committed rows stay) goes on flowing. Only
    a server still unreachable after ``RECONNECT_GIVE_UP_S`` fails the worker.
    """

    def __init__(self, role: str, index: int, ctx: WorkerContext, open_client: Callable[[], Any]) -> None:
        self.role, self.index, self.ctx, self.open_client = role, index, ctx, open_client
        self.client = open_client()

    def reopen(self, lost: BackendUnavailable, resent: int = 0) -> None:
        """Replace the lost client; raises the last ``BackendUnavailable`` when no new one could
        be opened in time, or at once when the run is stopping (nothing is waited for then)."""
        with contextlib.suppress(Exception):  # the old connection is gone: closing it may fail any way
            self.client.close()
        deadline, pause, error = time.monotonic() + RECONNECT_GIVE_UP_S, RECONNECT_FIRST_PAUSE_S, lost
        while True:
            if self.ctx.stop.is_set() or time.monotonic() > deadline:
                raise error
            time.sleep(pause)
            try:
                self.client = self.open_client()
                break
            except BackendUnavailable as exc:
                error, pause = exc, min(pause * 2, RECONNECT_MAX_PAUSE_S)
        detail = str(lost).splitlines()[0] if str(lost) else type(lost).__name__
        self.ctx.channel.send(Reconnected(self.role, self.index, time.time_ns(), detail, resent))

    def send_batch(self, messages: Sequence[bytes], events: int) -> None:
        """Send ``messages`` (``events`` events), again on a new connection if it was lost
        during the call: at least once, since part of it may have reached the queue."""
        while True:
            try:
                self.client.send_batch(messages)
                return
            except BackendUnavailable as exc:
                self.reopen(exc, resent=events)

    def close(self) -> None:
        with contextlib.suppress(BackendUnavailable):  # lost at the very end: nothing left to say on it
            self.client.close()
