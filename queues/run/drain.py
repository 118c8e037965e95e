"""The final drain: what the queue still holds once the consumers are stopped, read into the ledger.

A run is judged only when nothing of it can still arrive (Jepsen's and OpenChaos's final read).
By the time ``final_drain`` runs, the consumers have been stopped and any that hung were killed,
which makes the server release what they held (rolled-back transactions, a requeue on a closed
connection, a heartbeat expiry or a claim idle time: ``Backend.release_after_s``). A fresh
consumer in the runner's process then reads everything left, counting it as recovered at the
end, until the queue is empty: ``depth`` 0 where the backend can measure it, and no message for
a quiet period. A deadline bounds it, so a queue that keeps something (or a cancelled run's
backlog) ends the drain with that much ``stuck``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from queues.backends import Backend
from queues.measurement.ledger import Shares, index_records
from queues.run.accounting import Accounting
from queues.workers.consumer import settle
from queues.workload.events import decode_bodies

QUIET_S = 0.15  # nothing received this long, with depth 0: the queue is empty
RECEIVE_TIMEOUT_S = 0.05
BUDGET_S = 5.0  # reading what is left may take this long beyond the release wait


@dataclass(frozen=True)
class DrainResult:
    recovered: int  # events first counted by the drain
    messages: int  # messages it read (duplicates, corrupt and poison included)
    stuck: int | None  # the final depth: what the queue still holds (None: cannot be measured)
    duration_s: float
    timed_out: bool  # the deadline ended it, not an empty queue


def final_drain(
    *, backend: Backend, queue: str, accounting: Accounting, released_by: float | None = None
) -> DrainResult:
    """Read what ``queue`` still holds into ``accounting`` (see the module's docstring).

    ``released_by`` is the ``time.monotonic()`` by which the server has released what killed
    consumers held (the latest kill plus ``release_after_s``); the drain does not conclude the
    queue is empty before then. Raises ``QueueError`` when the server does not answer.
    """
    started = time.monotonic()
    if backend.drain_skips_empty and backend.capabilities.depth and (released_by or 0) <= started:
        if (depth := _depth(backend, queue)) == 0:
            return DrainResult(0, 0, depth, round(time.monotonic() - started, 3), False)
    settle_until = max(started, released_by or started)
    deadline = settle_until + BUDGET_S
    shares, batch_size = Shares.of(accounting.spec), accounting.spec.batch
    recovered = messages = 0
    consumer = backend.consumer(queue)
    try:
        last_message, timed_out = started, False
        while True:
            batch = consumer.receive_batch(batch_size, RECEIVE_TIMEOUT_S)
            now = time.monotonic()
            if batch:
                records, poison = decode_bodies(batch.bodies)
                flat, raw_sum, corrupt = index_records(records, shares)
                recovered += accounting.add_recovered(flat, raw_sum, corrupt, len(poison))
                settle(consumer, batch, poison)
                messages += len(batch)
                last_message = now
            elif now >= settle_until and now - last_message >= QUIET_S:
                if not _depth(backend, queue):
                    break
                last_message = now  # the queue says more is there (on its way back): wait on
            if now >= deadline:
                timed_out = True
                break
    finally:
        consumer.close()  # gives back anything read ahead and acks what was settled
    return DrainResult(recovered, messages, _depth(backend, queue), round(time.monotonic() - started, 3), timed_out)


def _depth(backend: Backend, queue: str) -> int | None:
    """The queue's depth on the runner's control connection, which may have been lost just
    before the drain (a server that ended it, as the runner's samples may not have noticed yet):
    reopened once, as every control operation of the runner is (``Backend.reconnecting``)."""
    return backend.reconnecting(backend.depth, queue) if backend.capabilities.depth else None
