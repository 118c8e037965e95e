"""Redis lists and streams against the real server: what only they have (the reaper,
XAUTOCLAIM, deferred acks, trimming, the at-most-once list, a receive in flight when the
connection dies). Killed consumers, lost servers and dead letters: tests/contract/test_faults.py."""

from __future__ import annotations

import threading
import time

import pytest

from queues.errors import BackendUnavailable
from queues.workers.consumer import settle
from queues.workload.events import decode_bodies
from tests.support.faults import cut_redis
from tests.support.messages import bodies, receive_batches
from tests.support.servers import connected_backend
from tests.support.waiting import wait_until


@pytest.mark.parametrize("alias, options", [("redis-list-noack", {}), ("redis-list", {"ack": "false"})])
def test_the_at_most_once_list_declares_it(alias, options):
    """What it loses to a killed consumer is reported: the contract suite runs that over every
    backend without ``redelivers_on_crash``; this is the option's way to the same backend."""
    backend = connected_backend(alias, **options)
    backend.close()
    assert not backend.capabilities.acks and not backend.capabilities.redelivers_on_crash


def test_the_at_most_once_list_sets_poison_aside_too(queue_of):
    """Without acks, the worker still sets undecodable messages aside (the contract suite's
    dead-letter test covers the backends with acks)."""
    backend, queue = queue_of("redis-list-noack")
    good, poison = bodies(5), [b"not an event", b"\x00" * 31]
    producer = backend.producer(queue)
    producer.send_batch([good[0], poison[0], *good[1:3], poison[1], *good[3:]])
    producer.close()
    consumer = backend.consumer(queue)
    for batch in receive_batches(consumer, 7):
        settle(consumer, batch, decode_bodies(batch.bodies)[1])  # as the worker does
    consumer.close()
    assert backend.dead_letters(queue) == poison
    assert backend.depth(queue) == 0


def abandon(consumer) -> None:
    """A consumer dying without a word: its connection drops, nothing is released."""
    consumer.client.close()
    consumer.closed = True


@pytest.mark.parametrize(
    "alias, options",
    [
        ("redis-list", {"heartbeat_s": "0.3", "reap_interval_s": "0.1"}),
        ("redis-stream", {"claim_idle_s": "0.3", "claim_interval_s": "0.1"}),
    ],
)
def test_a_dead_consumers_messages_are_returned(alias, options, queue_of):
    backend, queue = queue_of(alias, **options)
    sent = bodies(5)
    producer = backend.producer(queue)
    producer.send_batch(sent)
    producer.close()
    dead = backend.consumer(queue)
    assert sum(len(b) for b in receive_batches(dead, 5)) == 5
    abandon(dead)
    assert backend.depth(queue) == 5  # held, not acked
    survivor = backend.consumer(queue)
    # the short heartbeat / claim idle time return them quickly; 5 s bounds the wait, not the speed
    batches = receive_batches(survivor, 5, timeout_s=5)
    assert sorted(bytes(b) for batch in batches for b in batch.bodies) == sorted(sent)
    for batch in batches:
        survivor.ack(batch)
    survivor.receive_batch(10, 0.05)  # redis-list: the next call sends the deferred acks
    assert backend.depth(queue) == 0
    survivor.close()


def send_all(backend, queue: str, messages: list[bytes]) -> list[bytes]:
    producer = backend.producer(queue)
    producer.send_batch(messages)
    producer.close()
    return messages


def test_list_acks_ride_on_the_next_call_and_are_never_lost(queue_of):
    backend, queue = queue_of("redis-list")
    sent = send_all(backend, queue, bodies(300))
    consumer = backend.consumer(queue)
    first = consumer.receive_batch(100, 0.1)
    consumer.ack(first)
    assert backend.depth(queue) == 300  # the trim waits for the next call
    second = consumer.receive_batch(100, 0.1)
    # the trim rides on the take that the second receive sent ahead (prefetch): the first batch
    # is gone once the server ran it, which a loaded machine may delay past this line
    wait_until(lambda: backend.depth(queue) == 200, 10, "the first batch's trim, sent with the prefetched take")
    consumer.ack(second)
    abandon(consumer)  # dies before sending the second batch's trim
    survivor = backend.consumer(queue)
    again = receive_batches(survivor, 200)
    # the unsent ack is a duplicate, never a loss
    assert sorted(bytes(b) for batch in again for b in batch.bodies) == sorted(sent[100:])
    for batch in again:
        survivor.ack(batch)
    survivor.close()  # close sends the deferred acks before giving the list back
    assert backend.depth(queue) == 0


def test_list_acks_at_once_when_not_deferred(queue_of):
    backend, queue = queue_of("redis-list", defer_acks="false")
    send_all(backend, queue, bodies(50))
    consumer = backend.consumer(queue)
    batch = consumer.receive_batch(100, 0.1)
    assert len(batch) == 50
    consumer.ack(batch.subset(range(20)))
    assert backend.depth(queue) == 30
    consumer.ack(batch.subset(range(20, 50)))
    assert backend.depth(queue) == 0
    consumer.close()


@pytest.mark.parametrize("prefetch", ["true", "false"])
def test_a_list_consumer_presumed_dead_starts_afresh_and_loses_nothing(prefetch, queue_of):
    backend, queue = queue_of("redis-list", heartbeat_s="0.3", reap_interval_s="0.1", prefetch=prefetch)
    sent = send_all(backend, queue, bodies(30))
    slow = backend.consumer(queue)
    held = [slow.receive_batch(10, 0.1) for _ in range(2)]
    slow.ack(held[0])  # deferred
    # the heartbeat expires (nothing refreshes it while we wait): the reaper may take the list
    wait_until(lambda: not backend.client.exists(slow.hb), 10, "the slow consumer's heartbeat to expire")
    reaper = backend.consumer(queue)
    reaper.receive_batch(0, 0.01)
    reaper.close()
    slow.ack(held[1])
    # the next calls notice the mismatch: the consumer gives back what it holds, starts afresh
    again = []
    while batch := slow.receive_batch(40, 0.1):
        again.append(batch)
        slow.ack(batch)
    # everything not trimmed came back (the first batch too: a duplicate, never a loss)
    assert {bytes(b) for batch in again for b in batch.bodies} == set(sent)
    assert backend.depth(queue) == 0
    slow.close()
    assert backend.depth(queue) == 0


def test_acked_stream_entries_are_trimmed(queue_of):
    backend, queue = queue_of("redis-stream", trim_interval_s="0")
    producer = backend.producer(queue)
    producer.send_batch(bodies(5000))
    producer.close()
    consumer = backend.consumer(queue)
    for batch in receive_batches(consumer, 5000):
        consumer.ack(batch)
    consumer.receive_batch(10, 0.05)  # one more call runs the trimming
    consumer.close()
    assert backend.depth(queue) == 0
    assert backend.stream_length(queue) < 500  # approximate trimming keeps at most a node or so


def test_one_trim_removes_every_acked_entry_however_many(queue_of):
    # XTRIM MINID ~ without LIMIT 0 removes at most 10,000 entries a call: a consumer trimming
    # once a second fell behind any flow faster than that
    backend, queue = queue_of("redis-stream", trim_interval_s="3600")
    producer = backend.producer(queue)
    for start in range(0, 25_000, 5_000):
        producer.send_batch(bodies(5_000, start))
    producer.close()
    consumer = backend.consumer(queue)
    for batch in receive_batches(consumer, 25_000, max_messages=1000):
        consumer.ack(batch)
    assert backend.stream_length(queue) == 25_000  # nothing trimmed yet: the interval is an hour
    consumer.next_trim = 0.0  # the interval is up: the next call trims, once
    consumer.receive_batch(10, 0.01)
    detail = backend.depth_detail(queue)
    consumer.close()
    assert detail["total"] == 0 and detail["stream_length"] < 500  # '~' keeps at most a node or so


@pytest.mark.parametrize("alias", ["redis-list", "redis-stream"])
def test_a_receive_in_flight_when_the_connection_dies_raises(alias, queue_of):
    backend, queue = queue_of(alias)
    consumer = backend.consumer(queue)
    killer = threading.Timer(0.3, cut_redis, args=(backend, queue))
    killer.start()
    began = time.monotonic()
    with pytest.raises(BackendUnavailable, match="IMQ_REDIS_URL"):
        while time.monotonic() - began < 20:  # a bound, so a regression fails instead of hanging
            consumer.receive_batch(10, 0.5)  # blocks in BLMOVE / XREADGROUP BLOCK
    killer.join()
    consumer.client.close()
