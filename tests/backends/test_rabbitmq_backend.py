"""RabbitMQ against the real broker: crashes (classic and quorum), poison in the dead-letter
queue, confirm modes, and the error paths (wrong port, credentials, vhost, a connection closed
by the broker mid-run)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest

from queues.errors import BackendUnavailable
from queues.events import decode_bodies
from queues.launch import build_backend
from queues.runner import FAILED
from queues.workers import settle
from tests.backends.helpers import OnceAfter, bodies, kill_run, run
from tests.services import connected_backend, receive_batches


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_killed_consumer_loses_nothing_and_duplicates_are_counted(queue_type):
    backend = connected_backend("rabbitmq", queue_type=queue_type)
    spec, summary = kill_run(backend)
    backend.close()
    assert summary["lost"] == 0, summary
    assert summary["received"] == spec.events + summary["duplicates"]


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_poison_messages_land_in_the_dead_letter_queue(queue_type, queue_of):
    backend, queue = queue_of("rabbitmq", queue_type=queue_type)
    good, poison = bodies(4), [b"not an event", b"\x00" * 31]
    producer = backend.producer(queue)
    producer.send_batch([poison[0], *good[:2], poison[1], *good[2:]])
    producer.close()
    consumer = backend.consumer(queue)
    for batch in receive_batches(consumer, 6):
        settle(consumer, batch, decode_bodies(batch.bodies)[1])  # as the worker does
    consumer.close()
    deadline = time.monotonic() + 5  # dead-lettering is asynchronous in the broker
    while backend.depth(f"{queue}.dead") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
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


def close_worker_connections(namespace: str) -> int:
    """Close this run's producer and consumer connections from the broker side with
    ``rabbitmqctl close_connection``, found by the connection name the backend sets."""
    ctl = shutil.which("rabbitmqctl")
    listing = subprocess.run(
        [ctl, "-q", "list_connections", "pid", "client_properties"], capture_output=True, text=True, timeout=30
    ).stdout
    closed = 0
    for line in listing.splitlines():
        if re.search(rf'imq:{re.escape(namespace)}:(producer|consumer)\b', line):
            pid = line.split("\t", 1)[0]
            subprocess.run([ctl, "-q", "close_connection", pid, "imqueue test"], capture_output=True, timeout=30)
            closed += 1
    return closed


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl on this machine")
def test_a_connection_closed_by_the_broker_mid_run_fails_the_run():
    backend = connected_backend("rabbitmq")
    closed = []
    killer = OnceAfter(2_000, lambda: closed.append(close_worker_connections(backend.namespace)))
    spec, result = run(backend, events=1_000_000, batch=100, idle_timeout_s=5, on_progress=killer)
    backend.close()
    killer.thread.join(timeout=30)
    assert closed and closed[0] >= 1
    assert result.status == FAILED, result.summary
    assert "IMQ_AMQP_URL" in result.error and "CONNECTION_FORCED" in result.error, result.error
    assert time.monotonic() - killer.fired_at < 20
    assert 2_000 <= result.summary["unique"] < spec.events


def test_depth_detail_shows_ready_and_unacked_apart(queue_of):
    backend, queue = queue_of("rabbitmq")
    producer = backend.producer(queue)
    producer.send_batch(bodies(10))
    producer.close()
    consumer = backend.consumer(queue)
    held = receive_batches(consumer, 10)
    detail = backend.depth_detail(queue)
    assert detail["ready"] == 0 and detail["consumers"] == 1
    assert detail["unacked"] in {10, None}  # None where rabbitmqctl cannot see the broker
    assert backend.depth(queue) == 0  # ready messages only: in flight is invisible to AMQP
    for batch in held:
        consumer.ack(batch)
    consumer.close()
