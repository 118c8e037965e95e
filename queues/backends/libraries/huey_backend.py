"""``huey``: huey on Redis (``RedisHuey``), its consumer's ``Worker`` inside each imqueue consumer.

- Producer: calling the task enqueues it (``LPUSH`` of the pickled task), one per message;
  huey has no batch enqueue, so there is no ``batch_api`` option.
- Consumer: one huey ``Worker`` (what ``huey_consumer -k thread -w 1`` runs on its worker
  thread) looping on a thread of the consumer process until the stop flag is set; its blocking
  dequeue (``BRPOP``) waits at most ``read_timeout`` (0.25 s here, 1 s by
  default), so that a stop is seen soon.
- Guarantee: huey's dequeue pops the task; a worker killed during it loses it: at-most-once.
  ``depth`` is the queue's length (``pending_count``). A task failed by
  ``nack(requeue=False)`` is logged by huey and dropped: huey keeps no dead letters.
- Keys: ``huey.{redis,schedule,results,counters}.<queue>`` (``clean_name=False`` keeps the
  run's queue name as it is, so that ``list_queues`` can read it back).
"""

from __future__ import annotations

import threading
from typing import Any

from queues.backends.base import Consumer, Producer
from queues.backends.libraries.base import (
    CURRENT,
    DEAD,
    LIBRARY,
    REQUEUE,
    LibraryBackend,
    LibraryConsumer,
    LibraryProducer,
    missing_library,
)
from queues.backends.libraries.redis_keys import RedisLibraryBackend, glob_escape, queues_matching, unlink_matching

try:
    import huey
    from huey.consumer import Worker
except ImportError as exc:
    raise missing_library("huey", exc) from exc

TASK_NAME = "imq_deliver"
#: huey's blocking dequeue (``BRPOP``) timeout, 1 s by default: how long a stop may wait. Only
#: an idle worker waits it out, so a shorter one costs nothing while tasks flow.
READ_TIMEOUT_S = 0.25
KEY_KINDS = ("redis", "schedule", "results", "counters")


class DeadLetter(Exception):
    """imqueue set this task aside (``nack(requeue=False)``): huey logs it and drops it."""


def huey_task(body: bytes) -> None:
    """The task: hand the message to the imqueue consumer of this worker."""
    consumer = CURRENT.get()
    outcome = consumer.deliver(body)
    if outcome == REQUEUE:
        consumer.task(body)  # type: ignore[attr-defined]  # enqueued again, at the tail
    elif outcome == DEAD:
        raise DeadLetter("set aside by imqueue")


def new_huey(queue: str, client: Any) -> tuple[huey.RedisHuey, Any]:
    """A ``RedisHuey`` for ``queue`` on ``client``'s pool, and its task."""
    app = huey.RedisHuey(
        name=queue, connection_pool=client.connection_pool, clean_name=False, read_timeout=READ_TIMEOUT_S
    )
    return app, app.task(name=TASK_NAME)(huey_task)


class HueyBackend(RedisLibraryBackend):
    name = "huey"
    capabilities = LIBRARY.extend(acks=False, redelivers_on_crash=False)
    options = LibraryBackend.options

    def _huey(self, queue: str) -> huey.RedisHuey:
        return new_huey(queue, self.client)[0]

    def declare(self, queue: str) -> None:
        """Nothing to create: Redis makes the list on the first task."""

    def purge(self, queue: str) -> int:
        with self.converting("purge a queue on"):
            app = self._huey(queue)
            pending = app.pending_count()
            app.flush()
            return int(pending)

    def depth(self, queue: str) -> int:
        with self.converting("measure a queue on"):
            return int(self._huey(queue).pending_count())

    def delete(self, queue: str) -> None:
        with self.deleting(queue):
            self.client.unlink(*(f"huey.{kind}.{queue}" for kind in KEY_KINDS))
            unlink_matching(self.client, [f"huey.notify.{glob_escape(queue)}.*"])

    def list_queues(self, namespace: str) -> list[str]:
        def extract(key: str) -> str | None:
            kind, _, queue = key[len("huey.") :].partition(".")
            return queue if kind in KEY_KINDS else None

        with self.converting("list the keys on"):
            return queues_matching(self.client, f"huey.*.{glob_escape(namespace)}.*", namespace, extract)

    def producer(self, queue: str) -> Producer:
        return _HueyProducer(self, queue)

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        return _HueyConsumer(self, queue)

    def environment(self) -> dict[str, Any]:
        return {**super().environment(), "library": "huey", "library_version": huey.__version__}


class _HueyProducer(LibraryProducer):
    def __init__(self, backend: HueyBackend, queue: str) -> None:
        super().__init__(backend, queue)
        self.client = backend.new_client("producer")
        self.huey, self.task = new_huey(queue, self.client)

    def enqueue(self, body: bytes) -> None:
        self.task(body)

    def close(self) -> None:
        self.client.close()


class _HueyConsumer(LibraryConsumer):
    backend: HueyBackend

    def __init__(self, backend: HueyBackend, queue: str) -> None:
        self.client = backend.new_client("consumer")
        self.huey, self.task = new_huey(queue, self.client)
        self.stop_flag = threading.Event()
        # what huey's Consumer gives each of its workers (its defaults: 0.1 s, up to 10 s, x1.15)
        self.worker = Worker(self.huey, self.stop_flag, default_delay=0.1, max_delay=10.0, backoff=1.15)
        super().__init__(backend, queue)

    def run_worker(self) -> None:
        # huey's Consumer._create_process, for one worker
        self.worker.initialize()
        self.started.set()
        try:
            while not self.stop_flag.is_set():
                self.worker.loop()
        finally:
            self.worker.shutdown()

    def stop_worker(self) -> None:
        self.stop_flag.set()

    def after_stop(self) -> None:
        self.client.close()
