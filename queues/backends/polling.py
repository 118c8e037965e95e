"""When a table-queue consumer asks the server again: polling with back-off.

A consumer that finds its queue drained must not hammer the server (or burn a core) asking
again. ``Poller`` keeps its schedule *across* ``receive_batch`` calls, because the worker calls
``receive_batch`` with a short timeout in a loop: a schedule reset on every call would poll at
the worker's timeout instead of the backend's interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from queues.backends.base import Batch
from queues.backends.options import Option


class Poller:
    """Ask again at once after a full batch (more is probably waiting); after a partial one,
    wait ``interval_s`` (the queue is drained); after an empty one, wait and double the wait,
    up to ``max_interval_s``. Any message found resets the wait to ``interval_s``."""

    def __init__(self, interval_s: float, max_interval_s: float) -> None:
        self.interval_s = interval_s
        self.max_interval_s = max(interval_s, max_interval_s)
        self.wait_s = interval_s
        self.next_at = 0.0  # the first call asks at once

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def claimed(self, got: int, asked: int) -> None:
        """Schedule the next ask after a claim that returned ``got`` of ``asked`` messages."""
        now = time.monotonic()
        if got >= asked:
            self.next_at, self.wait_s = now, self.interval_s
        elif got:
            self.next_at, self.wait_s = now + self.interval_s, self.interval_s
        else:
            self.next_at = now + self.wait_s
            self.wait_s = min(self.wait_s * 2, self.max_interval_s)

    def wait(self, budget_s: float) -> None:
        """Sleep until the next ask is due, or ``budget_s`` at most."""
        pause = min(budget_s, self.next_at - time.monotonic())
        if pause > 0:
            time.sleep(pause)

    def describe(self) -> dict[str, Any]:
        return {"consumer_wait": "poll", "poll_interval_s": self.interval_s, "poll_max_interval_s": self.max_interval_s}

    def close(self) -> None:
        """Nothing to release: polling holds no connection of its own."""


def receive_when_due(
    waiter: Any,
    claim: Callable[[int], Batch],
    max_messages: int,
    timeout_s: float,
    wait: Callable[[float], None] | None = None,
) -> Batch:
    """The receive loop of a table-queue consumer: claim whenever ``waiter`` says it is due,
    wait in between (``wait``, default ``waiter.wait``), return the first non-empty batch or,
    after ``timeout_s``, an empty one."""
    deadline = time.monotonic() + timeout_s
    while True:
        if waiter.due():
            batch = claim(max_messages)
            waiter.claimed(len(batch), max_messages)
            if batch:
                return batch
        budget = deadline - time.monotonic()
        if budget <= 0:
            return Batch()
        (wait or waiter.wait)(budget)


#: The options of a backend whose consumers wait with a ``Poller`` (postgres, mysql).
POLL_OPTIONS = (
    Option(
        "poll_interval_s",
        float,
        0.05,
        "wait after a partial batch; the first wait on an empty queue",
        minimum=0.001,
        maximum=60,
        unit="s",
    ),
    Option(
        "poll_max_interval_s",
        float,
        0.5,
        "longest wait while the queue stays empty (the wait doubles up to it)",
        minimum=0.001,
        maximum=60,
        unit="s",
    ),
)
