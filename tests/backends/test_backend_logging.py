"""What the Redis backends log when they give a presumed-dead consumer's messages to another:
one line per reap or reclaim, naming how many messages went back."""

import logging

from tests.support.messages import receive_batches
from tests.support.waiting import wait_until

MESSAGES = [b"m%d" % i for i in range(5)]


def fill(backend, queue):
    producer = backend.producer(queue)
    producer.send_batch(MESSAGES)
    producer.close()


def records(caplog, logger):
    return [r for r in caplog.records if r.name == logger]


def test_a_reap_is_logged(queue_of, caplog):
    backend, queue = queue_of("redis-list", heartbeat_s=0.2, prefetch=False)
    fill(backend, queue)
    silent = backend.consumer(queue)
    assert len(silent.receive_batch(10, 1.0)) == len(MESSAGES)  # then it stops beating
    wait_until(lambda: not backend.client.exists(silent.hb), 10.0, "the silent consumer's heartbeat key to expire")
    survivor = backend.consumer(queue)
    with caplog.at_level(logging.INFO, logger="queues"):
        got = receive_batches(survivor, len(MESSAGES))
    assert sorted(b for batch in got for b in batch.bodies) == MESSAGES
    reaps = records(caplog, "queues.backends.redis_list")
    assert any(r.levelno == logging.WARNING and "reaped 5 message(s)" in r.getMessage() for r in reaps), caplog.text
    survivor.close()
    silent.client.close()


def test_a_reclaim_is_logged(queue_of, caplog):
    backend, queue = queue_of("redis-stream", claim_idle_s=0.2, claim_interval_s=0.1)
    fill(backend, queue)
    silent = backend.consumer(queue)
    assert len(silent.receive_batch(10, 1.0)) == len(MESSAGES)  # pending, never acked
    survivor = backend.consumer(queue)
    with caplog.at_level(logging.INFO, logger="queues"):
        got = receive_batches(survivor, len(MESSAGES))
    assert sorted(b for batch in got for b in batch.bodies) == MESSAGES
    claims = records(caplog, "queues.backends.redis_stream")
    assert any(r.levelno == logging.WARNING and "reclaimed" in r.getMessage() for r in claims), caplog.text
    assert (
        sum(int(r.getMessage().split("reclaimed ")[1].split()[0]) for r in claims if "reclaimed" in r.getMessage()) == 5
    )
    survivor.close()
    silent.client.close()
