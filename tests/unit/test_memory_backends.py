"""The in-memory backends keep poison as dead letters and name an undeclared queue."""

import logging
import multiprocessing
import threading
import time
import uuid

import pytest

from queues.backends.memory import MemoryBackend, MultiprocessBackend
from queues.errors import QueueNotFound
from queues.run.result import RunStatus
from queues.run.runner import Faults, Runner
from queues.workload.spec import WorkloadSpec
from tests.support.messages import receive_batches
from tests.support.waiting import wait_until

POISON = [b"poison-1", b"poison-2", b"poison-3"]
GOOD = [b"good-1", b"good-2"]


def declared(cls):
    backend = cls(namespace="imqtest")
    queue = f"imqtest.{uuid.uuid4().hex[:8]}"
    backend.declare(queue)
    return backend, queue


def nack_poison(backend, queue):
    """Receive everything, set the poison aside, ack the rest."""
    producer = backend.producer(queue)
    producer.send_batch(GOOD + POISON)
    producer.close()
    consumer = backend.consumer(queue)
    for batch in receive_batches(consumer, len(GOOD) + len(POISON)):
        poison = [i for i, body in enumerate(batch.bodies) if bytes(body).startswith(b"poison")]
        good = [i for i in range(len(batch)) if i not in poison]
        consumer.nack(batch.subset(poison), requeue=False)
        consumer.ack(batch.subset(good))
    consumer.close()


@pytest.mark.parametrize("cls", [MemoryBackend, MultiprocessBackend], ids=["memory", "memory-mp"])
def test_poison_nacked_without_requeue_lands_in_dead_letters(cls):
    backend, queue = declared(cls)
    assert backend.dead_letters(queue) == []
    nack_poison(backend, queue)
    assert sorted(backend.dead_letters(queue)) == sorted(POISON)
    assert backend.dead_letters(queue) == backend.dead_letters(queue)  # reading keeps them
    assert backend.depth(queue) == 0
    backend.delete(queue)


def test_memory_mp_dead_letters_come_back_from_a_forked_consumer():
    backend, queue = declared(MultiprocessBackend)
    child = multiprocessing.get_context("fork").Process(target=nack_poison, args=(backend, queue))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert sorted(backend.dead_letters(queue)) == sorted(POISON)
    backend.delete(queue)


class _KeepsDeadLetters:
    """Reads the dead letters just before the runner deletes the run's queue."""

    def delete(self, queue):
        self.seen = self.dead_letters(queue)
        super().delete(queue)


class _Memory(_KeepsDeadLetters, MemoryBackend):
    pass


class _MemoryMP(_KeepsDeadLetters, MultiprocessBackend):
    pass


@pytest.mark.parametrize("cls, alias", [(_Memory, "memory"), (_MemoryMP, "memory-mp")], ids=["memory", "memory-mp"])
def test_a_run_with_poison_sets_it_aside(cls, alias):
    backend = cls(namespace="imqtest")
    spec = WorkloadSpec(backend=alias, events=2_000, batch=100)
    result = Runner(spec, backend, run_id=uuid.uuid4().hex[:8], faults=Faults(poison_messages=4)).run()
    assert result.status == RunStatus.SUCCEEDED, result.error
    # poison is not an event of the run: the verdict says so, though every event was counted once
    assert result.summary["poison"] == 4 and result.summary["verdict"] == "corrupt"
    assert result.summary["verdict_reasons"] == ["4 poison message(s): bodies that are not events"]
    assert result.summary["lost"] == result.summary["duplicates"] == 0
    assert backend.seen == [b"not an imqueue event"] * 4


@pytest.mark.parametrize("cls", [MemoryBackend, MultiprocessBackend], ids=["memory", "memory-mp"])
def test_an_undeclared_queue_is_not_found(cls):
    backend = cls(namespace="imqtest")
    for use in (backend.producer, backend.consumer, backend.depth, backend.purge, backend.dead_letters):
        with pytest.raises(QueueNotFound, match="'imqtest.nowhere' was not declared"):
            use("imqtest.nowhere")


def test_a_nack_is_logged_once_per_call_not_per_message(caplog):
    backend, queue = declared(MemoryBackend)
    with caplog.at_level(logging.INFO, logger="queues"):
        nack_poison(backend, queue)
    lines = [r.getMessage() for r in caplog.records if r.name == "queues.backends.memory"]
    assert lines == ["memory: 3 message(s) nacked and set aside as dead letters"], lines


@pytest.mark.parametrize("cls", [MemoryBackend, MultiprocessBackend], ids=["memory", "memory-mp"])
def test_the_in_memory_queues_are_bounded_by_default(cls):
    """What they hold is in the run's own memory (for ``memory-mp``, the producer's feeder
    thread): without a bound, a 1e8-event burst grew the producer by gigabytes."""
    assert cls().max_backlog_bytes == 256_000_000


@pytest.mark.parametrize("cls", [MemoryBackend, MultiprocessBackend], ids=["memory", "memory-mp"])
def test_the_backlog_bound_holds_the_producer_back_until_a_consumer_takes(cls):
    backend = cls(namespace="imqtest", max_backlog_mb=0.01)  # 10 kB: at most 100 messages of 100 bytes
    queue = f"imqtest.{uuid.uuid4().hex[:8]}"
    backend.declare(queue)
    batches = [[bytes(100)] * 10 for _ in range(50)]  # 1 kB of bodies a batch, 50 kB in all

    def produce():
        producer = backend.producer(queue)
        for batch in batches:
            producer.send_batch(batch)

    sender = threading.Thread(target=produce, daemon=True)
    sender.start()
    wait_until(lambda: backend.depth(queue) >= 60, 10, "the queue to fill up to its bound")
    sender.join(timeout=0.3)
    assert sender.is_alive(), "the producer sent past the bound"
    assert backend.depth(queue) <= 100
    consumer = backend.consumer(queue)
    received = []
    for batch in receive_batches(consumer, 500, max_messages=10):  # taking makes room for the rest
        received += batch.bodies
        consumer.ack(batch)
    sender.join(timeout=10)
    assert not sender.is_alive() and len(received) == 500
    assert backend.depth(queue) == 0
    backend.delete(queue)


def test_a_run_on_a_bounded_memory_mp_queue_never_holds_more_than_its_bound():
    # 64 kB: two calls of 1000 one-event messages (32 bytes each); a consumer slower than the producer
    backend = MultiprocessBackend(max_backlog_mb=0.064, consume_cost_us=20)
    spec = WorkloadSpec(backend="memory-mp", events=30_000, batch=1_000)
    result = Runner(spec, backend, run_id=uuid.uuid4().hex[:8], sample_interval_s=0.05).run()
    assert result.status == RunStatus.SUCCEEDED and result.summary["verdict"] == "exact"
    depths = [s.depth for s in result.samples if s.depth is not None]
    assert depths and max(depths) <= 2_000


def test_a_consumer_that_starts_on_a_backlog_keeps_its_declared_capacity():
    # 1 ms a message: 400 messages take at least 0.4 s however fast the machine, even when the
    # consumer finds the queue full on its first receive and is never idle (it once ran at full
    # speed until the queue was first empty)
    backend = MultiprocessBackend(consume_cost_us="1000")
    queue = f"imq.{uuid.uuid4().hex[:8]}"
    backend.declare(queue)
    producer = backend.producer(queue)
    producer.send_batch([b"x"] * 1_000)
    consumer = backend.consumer(queue)
    began = time.monotonic()
    taken = 0
    while taken < 400:
        taken += len(consumer.receive_batch(100, 1.0))
    assert time.monotonic() - began >= 0.4 * 0.99
    backend.delete(queue)
