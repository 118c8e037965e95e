"""Driving a backend by hand: valid messages to send, batches received until a count, the
contract's sizes scaled down for the slower backends, and per-event delivery counts of a run."""

from __future__ import annotations

import time

import numpy as np

from queues.workload.events import encode_events, split_messages

#: The contract's event counts and rates, scaled down for backends that move fewer tasks a
#: second (the task libraries: one task per message, 0.2-3k a second here), so that each
#: contract test keeps its shape and its duration on them instead of being skipped.
SIZE_FACTOR = {
    "celery-redis": 0.025,
    "celery-rabbitmq": 0.025,
    "dramatiq-redis": 0.015,
    "dramatiq-rabbitmq": 0.025,
    "django-q2-orm": 0.004,  # its ORM broker polls a table: about 50 tasks a second here
    "django-q2-redis": 0.025,
    "huey": 0.05,
    "procrastinate": 0.015,
    "rq": 0.015,
}


def scaled(backend, n: int, *, at_least: int = 1) -> int:
    """``n`` events (or events/s) scaled by the backend's ``SIZE_FACTOR``."""
    return max(at_least, int(n * SIZE_FACTOR.get(backend.name, 1.0)))


def bodies(n: int, start: int = 0) -> list[bytes]:
    """``n`` valid messages of one event each (producer 0, sequence numbers from ``start``)."""
    seq = np.arange(start, start + n, dtype=np.int64)
    return list(split_messages(encode_events(0, seq, seq + 1, 0, 0), 1))


def receive_batches(consumer, expected: int, *, timeout_s: float = 10.0, max_messages: int = 100, settle=None) -> list:
    """Batches from ``consumer`` until ``expected`` messages came or ``timeout_s`` passed.
    ``settle(batch)``, where given, is called on each batch as it comes: a consumer that holds
    one message at a time (``Capabilities.holds_many`` false, the task libraries) gets the next
    only once it settled the last."""
    batches, got, deadline = [], 0, time.monotonic() + timeout_s
    while got < expected and time.monotonic() < deadline:
        batch = consumer.receive_batch(max_messages, 0.1)
        if batch:
            batches.append(batch)
            got += len(batch)
            if settle is not None:
                settle(batch)
    return batches


def count_deliveries(ledger) -> np.ndarray:
    """Per-event delivery counts of what ``ledger`` is fed from now on: the ledger keeps only a
    bitmap and totals, so a test that needs to know which event came how often taps its input."""
    counts = np.zeros(ledger.spec.events, dtype=np.int64)
    add_indices = ledger.add_indices

    def counting(flat, raw_sum, corrupt=0):
        np.add.at(counts, np.asarray(flat, dtype=np.int64), 1)
        return add_indices(flat, raw_sum, corrupt)

    ledger.add_indices = counting
    return counts
