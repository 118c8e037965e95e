"""``rq``: RQ (Redis Queue) on Redis, its ``SimpleWorker`` inside each imqueue consumer.

- Producer: ``Queue.enqueue(rq_task, body)``, one job per message (``batch_api``:
  ``Queue.enqueue_many`` in one pipeline). RQ's default serializer (pickle) carries the bytes.
  Job ids start with the run's queue name, so the run's keys can be found and removed.
- Consumer: a ``SimpleWorker`` (the job runs in the worker's own thread, no fork per job, like
  ``rq worker --worker-class rq.SimpleWorker``) on a thread of the consumer process. It cannot
  install signal handlers there (a thread), and RQ's job timeout (``SIGALRM``) is not enforced:
  imqueue's tasks do not hang, and the runner kills a consumer that does. Its blocking dequeue
  waits at most ``DEQUEUE_TIMEOUT_S`` (0.25 s) at a time, so that a stop is seen within a quarter of a second.
- Guarantee: RQ moves a job to its started registry when a worker takes it; a worker killed
  during the job leaves it there, and RQ's maintenance later marks it failed (abandoned), never
  runs it again: at-most-once. ``depth`` is the queue's length (jobs not yet taken).
- Dead letters: a job failed by ``nack(requeue=False)`` is in RQ's failed job registry.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, cast

from queues.backends.base import Consumer, Producer
from queues.backends.libraries.base import (
    BATCH_API,
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
    import rq
    from rq.registry import FailedJobRegistry
    from rq.timeouts import BaseDeathPenalty
    from rq.worker import SimpleWorker
except ImportError as exc:  # the registry turns this into one line naming the extra
    raise missing_library("rq", exc) from exc

_NOT_IN_JOB_ID = re.compile(r"[^A-Za-z0-9_-]")
#: How long a worker waits for a job before it looks at its stop flag again. RQ types it as whole
#: seconds, but passes it on to ``BLPOP``, which takes fractions (Redis 6 and later); RQ's own
#: command waits 1 s at least, which each run's stop and each final drain waited out.
DEQUEUE_TIMEOUT_S: Any = 0.25


def job_prefix(queue: str) -> str:
    """What every job id of ``queue`` starts with (RQ allows letters, digits, ``_`` and ``-``)."""
    return _NOT_IN_JOB_ID.sub("_", queue) + "_"


class DeadLetter(Exception):
    """imqueue set this task aside (``nack(requeue=False)``): RQ fails the job."""


def rq_task(body: bytes) -> None:
    """The task every job runs: hand the message to the imqueue consumer of this worker."""
    consumer = CURRENT.get()
    outcome = consumer.deliver(body)
    if outcome == REQUEUE:
        consumer.backend.requeue(consumer.queue, body)  # type: ignore[attr-defined]
    elif outcome == DEAD:
        raise DeadLetter("set aside by imqueue")


class _NoDeathPenalty(BaseDeathPenalty):
    """No job timeout: RQ's would need ``SIGALRM``, which only the main thread can handle."""

    def setup_death_penalty(self) -> None:
        pass

    def cancel_death_penalty(self) -> None:
        pass


class _ThreadWorker(SimpleWorker):
    death_penalty_class = _NoDeathPenalty

    def _install_signal_handlers(self) -> None:
        """None: the worker runs on a thread; imqueue stops it (``request_stop``)."""

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """RQ's dequeue, given up every ``DEQUEUE_TIMEOUT_S`` to see a stop request: RQ's
        own SIGTERM handler raises into the dequeue, which a thread cannot do."""
        while not self._stop_requested:
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=DEQUEUE_TIMEOUT_S)
            if result is not None:
                return result
        return None

    def subscribe(self) -> None:
        """No command channel (``rq`` CLI's remote shutdown/kill-horse): imqueue stops its
        workers itself, and the channel's thread would outlive the worker by up to a minute."""

    def unsubscribe(self) -> None:
        pass


class RQBackend(RedisLibraryBackend):
    name = "rq"
    capabilities = LIBRARY.extend(acks=False, redelivers_on_crash=False)
    options = (BATCH_API, *LibraryBackend.options)

    def queue_of(self, queue: str, client: Any = None) -> rq.Queue:
        return rq.Queue(queue, connection=client or self.client)

    def declare(self, queue: str) -> None:
        """Nothing to create: RQ makes its keys on the first job."""

    def purge(self, queue: str) -> int:
        with self.converting("purge a queue on"):
            return int(self.queue_of(queue).empty())

    def depth(self, queue: str) -> int:
        with self.converting("measure a queue on"):
            return int(self.queue_of(queue).count)

    def delete(self, queue: str) -> None:
        with self.deleting(queue):
            client, name = self.client, glob_escape(queue)
            self.queue_of(queue).delete(delete_jobs=True)  # also takes it out of rq:queues
            mine = f"rq:worker:{queue}.".encode()
            workers = [w for w in cast(set[bytes], client.smembers("rq:workers")) if w.startswith(mine)]
            if workers:
                client.srem("rq:workers", *workers)
            jobs = glob_escape(job_prefix(queue))
            unlink_matching(client, [f"rq:*:{name}", f"rq:*:{name}:*", f"rq:*:{jobs}*"])

    def list_queues(self, namespace: str) -> list[str]:
        def extract(key: str) -> str | None:
            return key.split(":", 2)[2] if key.startswith("rq:queue:") else None

        with self.converting("list the keys on"):
            return queues_matching(self.client, f"rq:queue:{glob_escape(namespace)}.*", namespace, extract)

    def dead_letters(self, queue: str) -> list[bytes]:
        with self.converting("read the dead letters on"):
            registry = FailedJobRegistry(queue, connection=self.client)
            jobs = rq.job.Job.fetch_many(registry.get_job_ids(), connection=self.client)
            return [job.args[0] for job in jobs if job is not None]

    def requeue(self, queue: str, body: bytes) -> None:
        """Enqueue ``body`` again (a task imqueue gave back), on a connection of its own."""
        client = self.new_client("producer")
        try:
            _RQProducer(self, queue, client).enqueue(body)
        finally:
            client.close()

    def producer(self, queue: str) -> Producer:
        return _RQProducer(self, queue, self.new_client("producer"))

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        return _RQConsumer(self, queue)

    def environment(self) -> dict[str, Any]:
        return {**super().environment(), "library": "rq", "library_version": rq.__version__}


class _RQProducer(LibraryProducer):
    def __init__(self, backend: RQBackend, queue: str, client: Any) -> None:
        super().__init__(backend, queue)
        self.client = client
        self.rq_queue = backend.queue_of(queue, client)
        self.prefix = job_prefix(queue)

    def _job_id(self) -> str:
        return self.prefix + uuid.uuid4().hex

    def enqueue(self, body: bytes) -> None:
        self.rq_queue.enqueue(rq_task, body, job_id=self._job_id())

    def enqueue_many(self, bodies: list[bytes]) -> None:
        self.rq_queue.enqueue_many([rq.Queue.prepare_data(rq_task, (body,), job_id=self._job_id()) for body in bodies])

    def close(self) -> None:
        self.client.close()


class _RQConsumer(LibraryConsumer):
    backend: RQBackend

    def __init__(self, backend: RQBackend, queue: str) -> None:
        self.client = backend.new_client("consumer")
        self.worker = _ThreadWorker(
            [backend.queue_of(queue, self.client)],
            connection=self.client,
            name=f"{queue}.{uuid.uuid4().hex[:12]}",
        )
        super().__init__(backend, queue)

    def run_worker(self) -> None:
        self.started.set()  # RQ has no ready hook; its first dequeue follows at once
        self.worker.work(logging_level="WARNING")

    def stop_worker(self) -> None:
        self.worker._stop_requested = True  # what its SIGTERM handler sets; seen within a dequeue timeout

    def after_stop(self) -> None:
        self.client.close()
