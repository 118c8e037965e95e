"""The contract every backend honours, run against each registered backend's real server.

A backend joins by being registered in ``queues.backends.BACKENDS``; capability-specific tests
read ``backend.capabilities`` instead of naming backends.
"""

from __future__ import annotations

import time
import uuid

import pytest

from queues.backends import BACKENDS, Batch, backend_class
from queues.errors import BackendUnavailable, NotSupported
from queues.run.result import RunStatus
from queues.run.runner import Faults, Runner
from queues.workload.spec import WorkloadSpec
from tests.support.messages import bodies, receive_batches, scaled
from tests.support.servers import closed_port_url


def flat(batches: list[Batch]) -> list[bytes]:
    return [bytes(b) for batch in batches for b in batch.bodies]


def test_declare_is_idempotent_and_a_new_queue_is_empty(backend, queue_name):
    backend.declare(queue_name)
    assert backend.purge(queue_name) == 0
    if backend.capabilities.depth:
        assert backend.depth(queue_name) == 0
    else:
        with pytest.raises(NotSupported):
            backend.depth(queue_name)


def test_messages_sent_are_received_once_and_in_order(backend, queue_name):
    n = scaled(backend, 250, at_least=25)
    sent = bodies(n)
    producer = backend.producer(queue_name)
    producer.send_batch(sent[: n * 4 // 5])
    producer.send(sent[n * 4 // 5])
    producer.send_batch(sent[n * 4 // 5 + 1 :])
    producer.close()
    consumer = backend.consumer(queue_name)
    holds_many = backend.capabilities.holds_many
    batches = receive_batches(consumer, len(sent), settle=None if holds_many else consumer.ack)
    received = flat(batches)
    if backend.capabilities.fifo:
        assert received == sent
    else:
        assert sorted(received) == sorted(sent)
    if holds_many:
        for batch in batches:
            consumer.ack(batch)
    assert not consumer.receive_batch(10, 0.2)
    if backend.capabilities.depth:
        assert backend.depth(queue_name) == 0
    consumer.close()


def test_receive_on_an_empty_queue_returns_an_empty_batch_within_the_timeout(backend, queue_name):
    consumer = backend.consumer(queue_name)
    began = time.monotonic()
    batch = consumer.receive_batch(10, 0.3)
    elapsed = time.monotonic() - began
    consumer.close()
    assert isinstance(batch, Batch) and len(batch) == 0
    assert elapsed < 5.0  # a bound a loaded machine meets: what matters is that it returns


def test_purge_removes_and_counts_messages(backend, queue_name):
    producer = backend.producer(queue_name)
    producer.send_batch(bodies(30))
    producer.close()
    if backend.capabilities.depth:
        assert backend.depth(queue_name) == 30
    assert backend.purge(queue_name) == 30
    consumer = backend.consumer(queue_name)
    assert not consumer.receive_batch(10, 0.2)
    consumer.close()


def test_delete_is_idempotent(backend):
    name = f"{backend.namespace}.del{uuid.uuid4().hex[:6]}"
    backend.declare(name)
    backend.delete(name)
    backend.delete(name)


def test_two_consumers_never_receive_the_same_message(backend, queue_name):
    sent = bodies(scaled(backend, 400, at_least=40))
    producer = backend.producer(queue_name)
    producer.send_batch(sent)
    producer.close()
    first, second = backend.consumer(queue_name), backend.consumer(queue_name)
    seen: list[bytes] = []
    deadline = time.monotonic() + 10
    while len(seen) < len(sent) and time.monotonic() < deadline:
        for consumer in (first, second):
            batch = consumer.receive_batch(50, 0.1)
            seen.extend(bytes(b) for b in batch.bodies)
            consumer.ack(batch)
    first.close()
    second.close()
    assert len(seen) == len(sent)
    assert sorted(seen) == sorted(sent)


@pytest.mark.requires("redelivers_on_crash")
def test_close_returns_unacked_messages_to_the_queue(backend, queue_name):
    sent = bodies(5)
    producer = backend.producer(queue_name)
    producer.send_batch(sent)
    producer.close()
    consumer = backend.consumer(queue_name)
    held = 5 if backend.capabilities.holds_many else 1  # a task library hands over one at a time
    assert set(flat(receive_batches(consumer, held))) <= set(sent)
    consumer.close()  # without acking
    again = backend.consumer(queue_name)
    batches = receive_batches(again, 5, timeout_s=30, settle=None if backend.capabilities.holds_many else again.ack)
    assert sorted(flat(batches)) == sorted(sent)
    for batch in batches:
        again.ack(batch)  # acking twice does nothing
    again.close()


@pytest.mark.requires("acks")
def test_nack_requeue_and_dead_letter(backend, queue_name):
    producer = backend.producer(queue_name)
    producer.send_batch(bodies(4))
    producer.close()
    consumer = backend.consumer(queue_name)
    # requeue the first two received, dead-letter the next two (as each comes, where the
    # consumer holds one at a time: settling all four at once needs a consumer that holds four)
    merged: list = []

    def settle(batch) -> None:
        for i in range(len(batch)):
            merged.append((batch, i))
            consumer.nack(batch.subset([i]), requeue=len(merged) <= 2)

    batches = receive_batches(consumer, 4, settle=None if backend.capabilities.holds_many else settle)
    if backend.capabilities.holds_many:
        for batch in batches:
            settle(batch)
    assert len(merged) == 4
    back = receive_batches(consumer, 2, timeout_s=10, settle=None if backend.capabilities.holds_many else consumer.ack)
    assert sorted(flat(back)) == sorted(bytes(b.bodies[i]) for b, i in merged[:2])
    for batch in back:
        consumer.ack(batch)
    assert not consumer.receive_batch(10, 0.3), "a dead-lettered message came back"
    consumer.close()


def run(backend, **spec_fields) -> tuple:
    faults = spec_fields.pop("faults", None)
    spec = WorkloadSpec(backend=backend.name, **spec_fields)
    result = Runner(spec, backend, run_id=uuid.uuid4().hex[:8], faults=faults).run()
    return spec, result


def test_a_small_run_through_the_engine_is_exact(backend):
    events = scaled(backend, 20_000)
    spec, result = run(backend, events=events, producers=2, consumers=2, batch=200, events_per_message=3)
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert result.summary["verdict"] == "exact"
    assert result.summary["sum"] == spec.expected_sum
    assert result.summary["unique"] == events and result.summary["lost"] == 0
    assert result.summary["latency_ms"]["p50"] > 0


def test_poison_messages_are_counted_and_set_aside(backend):
    spec, result = run(
        backend,
        events=scaled(backend, 2_000, at_least=100),
        batch=100,
        faults=Faults(poison_messages=3),
        idle_timeout_s=3,
    )
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert result.summary["poison"] == 3 and result.summary["lost"] == result.summary["duplicates"] == 0
    assert result.summary["verdict"] == "corrupt"  # something that is not an event arrived


SERVER_BACKENDS = sorted(alias for alias in BACKENDS if backend_class(alias).default_url)


@pytest.mark.parametrize("alias", SERVER_BACKENDS)
def test_an_unreachable_server_fails_fast_with_one_line_naming_the_url_and_setting(alias):
    cls = backend_class(alias)
    backend = cls(url=closed_port_url(alias), namespace=f"imqtest-down-{uuid.uuid4().hex[:6]}")  # no I/O yet
    began = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        backend.connect()
    assert time.monotonic() - began < 8
    message = str(caught.value)
    assert ":***@127.0.0.1:1" in message and "s3cret" not in message
    assert cls.url_setting and cls.url_setting in message and "\n" not in message
    assert caught.value.__cause__ is not None  # the driver's error is kept
    spec = WorkloadSpec(backend=alias, events=10)
    with pytest.raises(BackendUnavailable):  # the runner fails at once, before any worker starts
        Runner(spec, backend, run_id="down").run()
