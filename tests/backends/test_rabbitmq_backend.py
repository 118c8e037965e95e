"""RabbitMQ against the real broker: quorum queues (a killed consumer, poison), confirm modes,
refused connections (credentials, vhost), depth detail. The classic queue's killed consumer,
lost connections and dead letters: tests/contract/test_faults.py."""

from __future__ import annotations

import time

import pytest

from queues.errors import BackendUnavailable
from queues.run.launch import build_backend
from queues.workers.consumer import settle
from queues.workload.events import decode_bodies
from tests.support.messages import bodies, receive_batches
from tests.support.runs import kill_run, run
from tests.support.servers import connected_backend
from tests.support.waiting import wait_until


def test_a_killed_consumer_of_a_quorum_queue_loses_nothing():
    """The contract suite kills a consumer of the default (classic) queue."""
    backend = connected_backend("rabbitmq", queue_type="quorum")
    spec, summary = kill_run(backend)
    backend.close()
    assert summary["lost"] == 0, summary
    assert summary["unique_sum"] == spec.expected_sum and summary["sum"] >= spec.expected_sum


def test_poison_in_a_quorum_queue_lands_in_the_dead_letter_queue(queue_of):
    """The contract suite covers the default (classic) queue."""
    backend, queue = queue_of("rabbitmq", queue_type="quorum")
    good, poison = bodies(4), [b"not an event", b"\x00" * 31]
    producer = backend.producer(queue)
    producer.send_batch([poison[0], *good[:2], poison[1], *good[2:]])
    producer.close()
    consumer = backend.consumer(queue)
    for batch in receive_batches(consumer, 6):
        settle(consumer, batch, decode_bodies(batch.bodies)[1])  # as the worker does
    consumer.close()
    # dead-lettering is asynchronous in the broker, and a quorum queue's operations wait for its
    # log's fsync: once, in a CI run started right after a fresh install, the broker held them
    # (dead-lettering and the close of the test's connections alike) for more than 10 s
    wait_until(lambda: backend.depth(f"{queue}.dead") >= 2, 60, "the broker to dead-letter the poison")
    assert sorted(backend.dead_letters(queue)) == sorted(poison)
    assert backend.depth(queue) == 0


@pytest.mark.parametrize("confirms", ["message", "batch"])
def test_runs_with_publisher_confirms_are_exact(confirms):
    backend = connected_backend("rabbitmq", confirms=confirms)
    spec, result = run(backend, events=3_000, batch=100)
    backend.close()
    assert result.status == "succeeded", result.error
    assert result.summary["verdict"] == "exact"
    assert result.environment["backend"]["publisher_confirms"] == confirms


@pytest.mark.parametrize(
    "url, shown",
    [
        ("amqp://guest:wrong-pw@127.0.0.1:5672/%2F", "amqp://guest:***@127.0.0.1:5672/%2F"),
        ("amqp://guest:guest@127.0.0.1:5672/no-such-vhost", "amqp://guest:***@127.0.0.1:5672/no-such-vhost"),
    ],
    ids=["wrong-password", "wrong-vhost"],  # a closed port: the contract suite
)
def test_a_refused_connection_fails_fast_naming_the_url_and_setting(url, shown):
    connected_backend("rabbitmq").close()  # skip (or fail in CI) if the broker itself is down
    backend = build_backend("rabbitmq", urls={"IMQ_AMQP_URL": url})
    began = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        backend.connect()
    assert time.monotonic() - began < 8
    message = str(caught.value)
    assert shown in message and "wrong-pw" not in message
    assert "IMQ_AMQP_URL" in message and "\n" not in message


def test_depth_detail_shows_ready_and_unacked_apart(queue_of):
    backend, queue = queue_of("rabbitmq")
    producer = backend.producer(queue)
    producer.send_batch(bodies(10))
    producer.close()
    consumer = backend.consumer(queue)
    held = receive_batches(consumer, 10)
    detail = backend.depth_detail(queue)
    assert detail["ready"] == 0 and detail["consumers"] == 1
    # None where the management API is not enabled (here); its figures lag by up to 5 s
    assert detail["unacked"] is None or 0 <= detail["unacked"] <= 10
    assert detail["total"] == backend.depth(queue) == detail["ready"] + (detail["unacked"] or 0)
    for batch in held:
        consumer.ack(batch)
    consumer.close()
