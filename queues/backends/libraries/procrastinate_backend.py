"""``procrastinate``: procrastinate on PostgreSQL, its worker inside each imqueue consumer.

- Producer: ``task.defer(text=body)`` (JSON: the body as base64 text), one job per message;
  ``batch_api``: ``task.batch_defer`` of a send call's jobs (one statement).
- Consumer: ``App.run_worker_async(queues=[queue], concurrency=1)`` (``procrastinate worker
  --concurrency 1``: ``--consumers`` is the worker processes) on an event loop of its own, on
  a thread of the consumer process, without signal handlers; stopped by cancelling it (its
  graceful shutdown). The task is synchronous: procrastinate runs it on a thread of its own.
- Guarantee: a job is ``doing`` while it runs and ``succeeded`` once it returned (acks late).
  A killed worker leaves its job ``doing``: procrastinate retries stalled jobs only when asked
  (``retry_stalled_jobs``, a periodic task users add), so for the run it is lost, and
  ``depth`` (jobs ``todo`` or ``doing``) shows it as ``stuck``: at-most-once, declared so.
- Dead letters: a job imqueue sets aside fails (status ``failed``, kept in the table).
- Tables: procrastinate's schema in a PostgreSQL schema of its own, ``imq_procrastinate``
  (applied on first use; ``search_path`` points there), shared by every run; a run's jobs are
  those of its queue name, deleted with it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg

from queues.backends.base import Consumer, Producer
from queues.backends.libraries.base import (
    BATCH_API,
    DEAD,
    LIBRARY,
    REQUEUE,
    LibraryConsumer,
    LibraryProducer,
    bytes_of,
    missing_library,
    text_of,
)
from queues.backends.libraries.postgres_control import PostgresLibraryBackend
from queues.backends.postgres import CONNECTION_DEFAULTS, PG_CONNECT_TIMEOUT

try:
    import procrastinate
    from procrastinate import exceptions as procrastinate_errors
except ImportError as exc:
    raise missing_library("procrastinate", exc) from exc

TASK = "imq_deliver"
SCHEMA = "imq_procrastinate"
#: Taken while the schema is applied, so that two runs starting at once do not both apply it.
SCHEMA_LOCK = 0x1A51_0001


class DeadLetter(Exception):
    """imqueue set this job aside (``nack(requeue=False)``): procrastinate marks it failed."""


class ProcrastinateBackend(PostgresLibraryBackend):
    name = "procrastinate"
    capabilities = LIBRARY.extend(redelivers_on_crash=False)
    unavailable_errors = (psycopg.OperationalError, procrastinate_errors.ConnectorException)
    options = (BATCH_API, PG_CONNECT_TIMEOUT)
    schema, schema_lock = SCHEMA, SCHEMA_LOCK
    task_table, queue_column = "procrastinate_jobs", "queue_name"
    # a killed worker's job stays ``doing``: counted, it shows as ``stuck`` (module docstring)
    in_queue, ready = "status IN ('todo', 'doing')", "status = 'todo'"
    connection_defaults = CONNECTION_DEFAULTS

    def create_tables(self, conn: psycopg.Connection) -> None:
        """procrastinate's tables, applied once (``procrastinate schema --apply``)."""
        with self.converting("connect to", unavailable=(psycopg.Error,)):  # reported as the connection's failure
            if self.has_table(conn, self.task_table):
                return
            with self.schema_locked(conn):
                if not self.has_table(conn, self.task_table):  # another run applied it meanwhile
                    conn.execute(procrastinate.schema.SchemaManager.get_schema())

    def dead_letters(self, queue: str) -> list[bytes]:
        with self.converting("read the dead letters on"):
            rows = self.admin.execute(
                "SELECT args->>'text' FROM procrastinate_jobs WHERE queue_name = %s AND status = 'failed'", (queue,)
            ).fetchall()
        return [bytes_of(row[0]) for row in rows]

    def new_app(self, role: str, consumer: LibraryConsumer | None = None) -> tuple[procrastinate.App, Any]:
        """An app on a connector of its own (async for a worker, sync for a producer), and the
        run's task (a consumer's hands each job to ``consumer``)."""
        conninfo = self.conninfo(role)
        connector: Any = (
            procrastinate.PsycopgConnector(conninfo=conninfo)
            if consumer
            else procrastinate.SyncPsycopgConnector(conninfo=conninfo)
        )
        app = procrastinate.App(connector=connector)

        def imq_deliver(text: str) -> None:
            assert consumer is not None, "a producer's task never runs"
            outcome = consumer.deliver(bytes_of(text))
            if outcome == REQUEUE:
                consumer.requeue(text)  # type: ignore[attr-defined]
            elif outcome == DEAD:
                raise DeadLetter("set aside by imqueue")

        task = app.task(name=TASK)(imq_deliver)
        return app, task

    def producer(self, queue: str) -> Producer:
        return _ProcrastinateProducer(self, queue)

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        return _ProcrastinateConsumer(self, queue)

    def environment(self) -> dict[str, Any]:
        return {
            **self.server_environment("synchronous_commit"),
            "library": "procrastinate",
            "library_version": procrastinate.__version__,
            "batch_api": self.batch_api,
        }


class _ProcrastinateProducer(LibraryProducer):
    def __init__(self, backend: ProcrastinateBackend, queue: str) -> None:
        super().__init__(backend, queue)
        with backend.converting("connect to", unavailable=(psycopg.Error,)):
            self.app, task = backend.new_app("producer")
            self.app.open()
        self.task = task.configure(queue=queue)

    def enqueue(self, body: bytes) -> None:
        self.task.defer(text=text_of(body))

    def enqueue_many(self, bodies: list[bytes]) -> None:
        self.task.batch_defer(*({"text": text_of(body)} for body in bodies))

    def close(self) -> None:
        self.app.close()


class _ProcrastinateConsumer(LibraryConsumer):
    backend: ProcrastinateBackend

    def __init__(self, backend: ProcrastinateBackend, queue: str) -> None:
        self.app, self.task = backend.new_app("consumer", self)
        self.loop = asyncio.new_event_loop()
        self.run_task: asyncio.Task[Any] | None = None
        self.stop_requested = threading.Event()
        super().__init__(backend, queue)

    def requeue(self, text: str) -> None:
        """Defer the job again (a job imqueue gave back), from the task's thread."""
        future = asyncio.run_coroutine_threadsafe(
            self.task.configure(queue=self.queue).defer_async(text=text), self.loop
        )
        future.result()

    async def _work(self) -> None:
        async with self.app.open_async():
            await self.app.check_connection_async()
            self.started.set()
            await self.app.run_worker_async(
                queues=[self.queue], concurrency=1, install_signal_handlers=False, wait=True, name=f"imq-{self.queue}"
            )

    def run_worker(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.run_task = self.loop.create_task(self._work())
        if self.stop_requested.is_set():
            self.run_task.cancel()
        try:
            self.loop.run_until_complete(self.run_task)
        except asyncio.CancelledError:
            pass  # stopped
        finally:
            self.loop.close()

    def stop_worker(self) -> None:
        self.stop_requested.set()
        task = self.run_task
        if task is not None and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass  # the loop ended in the meantime
