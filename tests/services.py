"""Real servers for tests: connect, or skip with a clear message (fail under ``CI=true``).

Shared by the contract suite and the backend-specific suites (dramatiq ``tests/conftest.py``).
"""

from __future__ import annotations

import os
import time
import uuid

import numpy as np
import pytest

from queues.backends import Backend, backend_class
from queues.errors import BackendUnavailable
from queues.workload.events import encode_events, split_messages

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

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


def unavailable(reason: str) -> None:
    """Skip on a laptop without the service; fail in CI, where nothing may be skipped."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing service fails the run)", pytrace=False)
    pytest.skip(reason)


def backend_url(alias: str) -> str:
    cls = backend_class(alias)
    return os.environ.get(cls.url_setting or "", "") or cls.default_url


def connected_backend(alias: str, **options) -> Backend:
    """A connected backend with a namespace of its own, or skip/fail if its server is down."""
    cls = backend_class(alias)
    backend = cls(url=backend_url(alias), namespace=f"imqtest-{uuid.uuid4().hex[:10]}", **options)
    try:
        backend.connect()
    except BackendUnavailable as exc:
        unavailable(f"{alias}: server not reachable: {exc}")
    return backend


def closed_port_url(alias: str, *, password: str = "s3cret") -> str:
    """The backend's default URL with a password and port 1, where nothing listens."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(backend_class(alias).default_url)
    user = parts.username or "imq"
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@127.0.0.1:1"))


def bodies(n: int, start: int = 0) -> list[bytes]:
    """``n`` valid messages of one event each (producer 0, sequence numbers from ``start``)."""
    seq = np.arange(start, start + n, dtype=np.int64)
    return list(split_messages(encode_events(0, seq, seq + 1, 0, 0), 1))


def wait_until(predicate, timeout_s: float, what: str, *, interval_s: float = 0.02):
    """Call ``predicate`` until it returns something truthy, and return that; fail naming
    ``what`` after ``timeout_s``. Tests wait for an observable condition with this instead of
    sleeping for a guessed time, which a loaded machine can always outlast."""
    deadline = time.monotonic() + timeout_s
    while True:
        if value := predicate():
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}", pytrace=False)
        time.sleep(interval_s)


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


@pytest.fixture
def queue_of():
    """``queue_of(alias, **options)``: a connected backend and a declared queue of its own,
    deleted afterwards."""
    made = []

    def make(alias, **options):
        backend = connected_backend(alias, **options)
        queue = f"{backend.namespace}.q"
        backend.declare(queue)
        made.append((backend, queue))
        return backend, queue

    yield make
    for backend, queue in made:
        backend.delete(queue)
        backend.close()


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
