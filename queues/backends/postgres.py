"""Postgres tables as queues: ``postgres`` (polling) and ``postgres-notify`` (LISTEN/NOTIFY).

Each queue is a table of its own, ``<queue name made safe>_<hash>`` (see
``sqlfiles.table_name``), with a ``..._dead`` table beside it for dead letters; ``declare``
creates both and ``delete`` drops both (the runner deletes every run's queue at its end, so
runs leave nothing behind). The SQL is in ``sql/postgres.sql``.

Claiming: a consumer deletes a batch of rows ``FOR UPDATE SKIP LOCKED`` *inside its open
transaction* and returns them; ``ack`` commits, which makes the delete final. A ``nack``
puts the rows back under their own ids (``requeue=True``, same transaction) or copies them to
the dead-letter table (``requeue=False``); ``close``, a lost connection or a SIGKILLed consumer
roll the transaction back, and the rows are at once visible to the other consumers again. We
chose this over a lease (a ``locked_until`` column and a visibility timeout) because it needs no
timeout to tune, redelivers a crashed consumer's messages as soon as the server notices the
connection is gone, and costs one statement per batch instead of an UPDATE plus a DELETE.
The price: a claimed batch holds a transaction open until it is settled, so consumers ack
promptly (the worker does), and ``claim_timeout_s`` (``idle_in_transaction_session_timeout``,
300 s by default) ends a consumer that holds one far too long.

A consumer claims from just above the last id it claimed, and from the lowest id every
``FULL_SCAN_S`` or when that finds nothing: deleted rows stay in the primary-key index while
any transaction on the server might still see them, and a scan from the lowest id then walks
all of them (one idle transaction elsewhere cut a 1e6-event run from ~300k to 60k events/s).
Rows below the bound (requeued, rolled back, committed late by another producer) therefore
wait up to a second while newer rows flow: FIFO holds for one producer and one consumer.

Waiting: ``postgres`` consumers poll with back-off (``polling.Poller``: again at once after a
full batch, ``poll_interval_s`` after a partial one, doubling up to ``poll_max_interval_s``
while the queue stays empty). ``postgres-notify`` consumers sleep on ``LISTEN``; a
statement-level trigger on the queue table calls ``pg_notify`` for every inserting statement
(one per COPY batch), delivered at commit. The table stays the source of truth: the
notification only wakes consumers up, and a consumer still looks every ``fallback_poll_s``
because rows returned by a rollback (a crashed consumer) notify nobody. Each listening consumer
has a second connection for LISTEN: a session receives notifications only between
transactions, and the claiming one sits in a transaction while its batches are unacked.

Producing: ``insert`` chooses COPY (binary, built with numpy from the packed batch: the
default, measured fastest: ~446k rows/s against ~253k for ``unnest`` and ~100k for
``executemany`` in bench/bench_sql.py), ``unnest`` (one ``INSERT ... SELECT
unnest(%s::bytea[])``) or ``executemany`` (pipelined single-row INSERTs in one transaction).
With COPY, batches under ``COPY_MIN_MESSAGES`` go through one ``unnest`` INSERT: one round
trip instead of COPY's two.

Prepared statements are off (``prepare_threshold=None``): psycopg prepares a statement after
five executions, and a generic plan cached while the table was nearly empty can make every
later claim scan the whole table. Connections have connect, TCP keepalive,
TCP user and statement timeouts, so a server lost mid-run makes a worker raise instead of hang.
"""

from __future__ import annotations

import logging
import math
import struct
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus

from queues.backends import sqlfiles
from queues.backends.base import CONNECT_TIMEOUT, Backend, Batch, Capabilities, Consumer, Producer, log_nacked
from queues.backends.options import Option
from queues.backends.polling import POLL_OPTIONS, Poller, receive_when_due
from queues.errors import OperationFailed
from queues.workload.events import PackedMessages

log = logging.getLogger(__name__)

QUERIES = sqlfiles.queries("postgres")
INSERT_METHODS = ("copy", "unnest", "executemany")
#: Connection defaults a URL may override: notice a dead peer within ~15 s. (The connect
#: timeout is the option ``connect_timeout_s``.)
CONNECTION_DEFAULTS = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
#: How often a consumer claims from the lowest id rather than from where its last batch ended.
FULL_SCAN_S = 1.0
#: Smaller batches are inserted with one INSERT: COPY's setup round trip outweighs its speed.
COPY_MIN_MESSAGES = 16

#: libpq, and psycopg after it, counts the connect timeout in whole seconds, at least 2.
PG_CONNECT_TIMEOUT = replace(
    CONNECT_TIMEOUT,
    minimum=2,
    help=f"{CONNECT_TIMEOUT.help} (libpq counts whole seconds: rounded up)",
)

_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)


#: The roles of a run's worker connections (``listener``: a ``postgres-notify`` consumer's LISTEN).
WORKER_ROLES = ("producer", "consumer", "listener")
#: Postgres keeps the first 63 bytes of an ``application_name``.
MAX_NAME_CHARS = 63


def worker_connection_name(role: str, queue: str) -> str:
    """The ``application_name`` of a worker's connection to ``queue`` (``pg_stat_activity``):
    ``imq <role> <table>``. Where that is too long, the middle of the table's name goes, never
    the hash of the queue name that ends it: the name stays one run's."""
    table = sqlfiles.table_name(queue)
    name = f"imq {role} {table}"
    if len(name) <= MAX_NAME_CHARS:
        return name
    digest = table[-sqlfiles.DIGEST_SUFFIX_CHARS :]
    return name[: MAX_NAME_CHARS - len(digest)] + digest


def control_connection_name(namespace: str, instance_tag: str) -> str:
    """The ``application_name`` of a backend's control connection (``pg_stat_activity``); the
    instance's tag comes first, so truncation never takes it."""
    return f"imq control {instance_tag} {namespace}"[:MAX_NAME_CHARS]


def terminate_sessions(conn: psycopg.Connection, names: list[str]) -> int:
    """End the sessions whose ``application_name`` is one of ``names`` (never ``conn``'s own);
    how many the server agreed to end."""
    return _one_row(conn.execute(QUERIES["terminate_sessions"], {"names": names}))[0]


def query(name: str, table: str) -> sql.Composed:
    """Query ``name`` with the identifiers of the queue table ``table`` filled in."""
    names = {
        "queue": table,
        "dead": f"{table}_dead",
        "notify_function": f"{table}_notify",
        "notify_trigger": f"{table}_notify",
    }
    return sql.SQL(QUERIES[name]).format(**{k: sql.Identifier(v) for k, v in names.items()})


def binary_copy(messages: Sequence[bytes]) -> bytes:
    """``messages`` as one COPY ... (FORMAT BINARY) payload of single-column rows.

    A packed batch becomes a numpy record array (field count, length, body) in one go; other
    sequences are framed message by message.
    """
    parts = [_COPY_SIGNATURE]
    tail: Sequence[bytes] = messages
    if isinstance(messages, PackedMessages) and messages.size:
        size, buffer = messages.size, messages.buffer
        full = len(buffer) // size
        rows = np.empty(full, dtype=np.dtype([("fields", ">i2"), ("length", ">i4"), ("body", f"V{size}")]))
        rows["fields"], rows["length"] = 1, size
        rows["body"] = np.frombuffer(buffer, dtype=f"V{size}", count=full)
        parts.append(rows.tobytes())
        tail = [buffer[full * size :]] if len(buffer) % size else []
    parts.extend(struct.pack("!hi", 1, len(body)) + body for body in tail)
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def _one_row(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one (an aggregate)."""
    row = cursor.fetchone()
    if row is None:
        raise OperationFailed("postgres: a query that always returns a row returned none")
    return row


class PostgresBackend(Backend):
    """One table per queue, consumers claiming with ``FOR UPDATE SKIP LOCKED`` and polling."""

    name = "postgres"
    capabilities = Capabilities(native_batch=True)
    url_setting = "IMQ_POSTGRES_URL"
    default_url = "postgresql://postgres@127.0.0.1:5432/test"
    # connection lost, server shut down, and our own timeouts (statement, lock, idle claim)
    unavailable_errors = (psycopg.OperationalError,)
    failed_errors = (psycopg.Error,)
    listens = False
    options: ClassVar[tuple[Option, ...]] = (
        Option("insert", str, "copy", "how producers insert rows", choices=INSERT_METHODS),
        *POLL_OPTIONS,
        Option(
            "claim_timeout_s",
            float,
            300.0,
            "how long a consumer may hold a claimed batch before the server ends its session",
            minimum=0.1,
            maximum=86_400,
            unit="s",
        ),
        Option(
            "statement_timeout_s",
            float,
            30.0,
            "longest a statement may run (lock waits: at most 10 s)",
            minimum=0.1,
            maximum=86_400,
            unit="s",
        ),
        PG_CONNECT_TIMEOUT,
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url = self.url or self.default_url
        self.insert = str(self.option_values["insert"])
        self.poll_interval_s = float(self.option_values["poll_interval_s"])
        self.poll_max_interval_s = float(self.option_values["poll_max_interval_s"])
        self.claim_timeout_s = float(self.option_values["claim_timeout_s"])
        self.statement_timeout_s = float(self.option_values["statement_timeout_s"])
        self._admin: psycopg.Connection | None = None

    # -- connections -----------------------------------------------------------------------

    def _fresh_state(self) -> dict[str, Any]:
        return {"_admin": None}  # a forked worker must never use the runner's socket

    def _connect(self, application_name: str, *, autocommit: bool) -> psycopg.Connection:
        """A new connection with our timeouts. Raises ``BackendUnavailable``."""
        with self.parsing_url():
            params = conninfo_to_dict(self.url)
            for key, value in CONNECTION_DEFAULTS.items():
                params.setdefault(key, value)
            # the option, not the URL, decides: the run records the option as in force
            params["connect_timeout"] = math.ceil(self.connect_timeout_s)
            params["application_name"] = application_name[:63]
            params["options"] = " ".join(filter(None, [str(params.get("options") or ""), self._server_options()]))
            conninfo = make_conninfo("", **params)
        with self.converting("connect to", unavailable=(psycopg.Error,)):  # refused credentials too
            conn = psycopg.connect(conninfo, autocommit=autocommit)
        conn.prepare_threshold = None  # see the module docstring: no cached generic plans
        return conn

    def _server_options(self) -> str:
        """Session settings: a statement, a lock wait or an abandoned claim never lasts forever."""
        timeouts = {
            "statement_timeout": self.statement_timeout_s,
            "lock_timeout": min(10.0, self.statement_timeout_s),
            "idle_in_transaction_session_timeout": self.claim_timeout_s,
        }
        return " ".join(f"-c {name}={int(seconds * 1000)}" for name, seconds in timeouts.items())

    def connect(self) -> None:
        if self._admin is None or self._admin.closed:  # closed: see ``Backend.reconnecting``
            self._admin = self._connect(control_connection_name(self.namespace, self.instance_tag), autocommit=True)

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def _execute(self, name: str, queue: str, params: Any = None, doing: str = "run a query on") -> psycopg.Cursor:
        self.connect()
        assert self._admin is not None
        with self.converting(doing):
            return self._admin.execute(query(name, sqlfiles.table_name(queue)), params)

    # -- queues ----------------------------------------------------------------------------

    def declare(self, queue: str) -> None:
        """Create the queue and dead-letter tables (and the NOTIFY trigger). Idempotent."""
        self.connect()
        assert self._admin is not None
        with self.converting("declare a queue on"), self._admin.transaction():
            for name in self._declare_queries():
                self._admin.execute(query(name, sqlfiles.table_name(queue)))

    def _declare_queries(self) -> tuple[str, ...]:
        return ("create_queue", "create_dead")

    def purge(self, queue: str) -> int:
        """Remove the ready messages (not those claimed by a live consumer); return how many."""
        return self._execute("purge", queue, doing="purge a queue on").rowcount

    def delete(self, queue: str) -> None:
        """Drop the queue's tables (and trigger function). Idempotent."""
        with self.deleting(queue):
            self._execute("drop_tables", queue)

    def depth(self, queue: str) -> int:
        """Exact: ``count(*)``, which sees claimed rows until their consumer commits."""
        return _one_row(self._execute("depth", queue, doing="measure a queue on"))[0]

    def dead_letters(self, queue: str) -> list[bytes]:
        """The rows of the dead-letter table, oldest first (reading keeps them)."""
        rows = self._execute("dead_letters", queue, doing="read the dead letters on").fetchall()
        return [bytes(body) for (body,) in rows]

    def list_queues(self, namespace: str) -> list[str]:
        """The queues whose tables (or trigger function) are on the server, by name prefix;
        table names lead back to queue names through ``sqlfiles.queue_of_object``."""
        self.connect()
        assert self._admin is not None
        with self.converting("list the tables on"):
            rows = self._admin.execute(QUERIES["list_objects"], {"prefix": sqlfiles.table_prefix(namespace)}).fetchall()
        return sorted({q for (name,) in rows if (q := sqlfiles.queue_of_object(name, namespace))})

    def count_objects(self, prefix: str) -> int:
        """How many tables and functions start with ``prefix`` (runs must leave nothing behind)."""
        self.connect()
        assert self._admin is not None
        with self.converting("count the objects on"):
            return _one_row(self._admin.execute(QUERIES["count_objects"], {"prefix": prefix}))[0]

    def cut_connections(self, queue: str) -> int:
        """``pg_terminate_backend`` of the sessions named after ``queue``'s workers."""
        return self._terminate([worker_connection_name(role, queue) for role in WORKER_ROLES])

    def cut_control_connection(self) -> int:
        return self._terminate([control_connection_name(self.namespace, self.instance_tag)])

    def _terminate(self, names: list[str]) -> int:
        """End the sessions called ``names``, from a connection of its own (the control one may
        be among them, and may be busy in the runner's thread)."""
        with self._connect(f"imq cut {self.instance_tag}", autocommit=True) as admin:
            with self.converting("end connections on"):
                return terminate_sessions(admin, names)

    def environment(self) -> dict[str, Any]:
        self.connect()
        assert self._admin is not None
        with self.converting("read the settings of"):
            cur = self._admin.execute(QUERIES["environment"])
            names = [column.name for column in cur.description or ()]
            settings = _one_row(cur)
        return {
            **dict(zip(names, settings, strict=True)),
            "driver": f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__})",
            "insert": self.insert,
            "claim": "DELETE ... FOR UPDATE SKIP LOCKED in a transaction committed on ack",
            **self._waiter_settings(),
        }

    def _waiter_settings(self) -> dict[str, Any]:
        return Poller(self.poll_interval_s, self.poll_max_interval_s).describe()

    # -- workers ---------------------------------------------------------------------------

    def producer(self, queue: str) -> Producer:
        table = sqlfiles.table_name(queue)
        return _Producer(self, self._connect(worker_connection_name("producer", queue), autocommit=True), table)

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        table = sqlfiles.table_name(queue)
        conn = self._connect(worker_connection_name("consumer", queue), autocommit=False)
        return _Consumer(self, conn, table, self._waiter(conn, queue))

    def _waiter(self, conn: psycopg.Connection, queue: str) -> Any:
        return Poller(self.poll_interval_s, self.poll_max_interval_s)


class PostgresNotifyBackend(PostgresBackend):
    """The same table; consumers sleep on ``LISTEN`` and a trigger's ``NOTIFY`` wakes them."""

    name = "postgres-notify"
    capabilities = Capabilities(native_batch=True, push=True)
    options = (
        *PostgresBackend.options,
        Option(
            "fallback_poll_s",
            float,
            1.0,
            "a listening consumer still looks this often (rows a rollback returns notify nobody)",
            minimum=0.01,
            maximum=3600,
            unit="s",
        ),
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fallback_poll_s = float(self.option_values["fallback_poll_s"])

    def _declare_queries(self) -> tuple[str, ...]:
        return ("create_queue", "create_dead", "create_notify_function", "create_notify_trigger")

    def delete(self, queue: str) -> None:
        super().delete(queue)
        with self.deleting(queue):
            self._execute("drop_notify_function", queue)

    def _waiter_settings(self) -> dict[str, Any]:
        return {"consumer_wait": "listen", "fallback_poll_s": self.fallback_poll_s}

    def _waiter(self, conn: psycopg.Connection, queue: str) -> Any:
        # A connection of its own: a session receives notifications only between transactions,
        # and the claiming connection sits in one while its batches are unacked.
        listener = self._connect(worker_connection_name("listener", queue), autocommit=True)
        with self.converting("listen on"):
            listener.execute(query("listen", sqlfiles.table_name(queue)))
        return _Listener(listener, self.fallback_poll_s)


class _Producer(Producer):
    def __init__(self, backend: PostgresBackend, conn: psycopg.Connection, table: str) -> None:
        self.backend, self.conn = backend, conn
        self.cur = conn.cursor()
        self._insert = getattr(self, f"_insert_{backend.insert}")
        self.q_copy = query("copy_in", table)
        self.q_one = query("insert_one", table)
        self.q_unnest = query("insert_unnest", table)

    def send_batch(self, messages: Sequence[bytes]) -> None:
        if not len(messages):
            return
        with self.backend.converting("send to"):
            self._insert(messages)

    def _insert_copy(self, messages: Sequence[bytes]) -> None:
        if len(messages) < COPY_MIN_MESSAGES:
            self._insert_unnest(messages)  # COPY costs two round trips; one INSERT costs one
            return
        with self.cur.copy(self.q_copy) as copy:
            copy.write(binary_copy(messages))

    def _insert_unnest(self, messages: Sequence[bytes]) -> None:
        self.cur.execute(self.q_unnest, {"bodies": list(messages)})

    def _insert_executemany(self, messages: Sequence[bytes]) -> None:
        with self.conn.transaction():  # one commit per batch, not one per row
            self.cur.executemany(self.q_one, [(body,) for body in messages])

    def close(self) -> None:
        self.conn.close()


class _Consumer(Consumer):
    """Claims in one open transaction; commits once every claimed message is settled."""

    def __init__(self, backend: PostgresBackend, conn: psycopg.Connection, table: str, waiter: Any) -> None:
        self.backend, self.conn, self.waiter = backend, conn, waiter
        self.cur = conn.cursor()
        self.q_claim = query("claim", table)
        self.q_claim_after = query("claim_after", table)
        self.after: int | None = None  # the highest id this consumer claimed: where to look next
        self.full_scan_at = 0.0  # when to look from the lowest id again
        self.q_requeue = query("requeue", table)
        self.q_dead = query("dead_letter", table)
        self.unsettled: set[int] = set()  # ids deleted in the open transaction, not yet acked

    def receive_batch(self, max_messages: int, timeout_s: float) -> Batch:
        return receive_when_due(self.waiter, self._claim, max_messages, timeout_s, wait=self._wait)

    def _wait(self, budget_s: float) -> None:
        with self.backend.converting("wait for messages on"):
            self.waiter.wait(budget_s)

    def _claim(self, limit: int) -> Batch:
        """Claim from where the last batch ended; from the lowest id when that finds nothing
        and every ``FULL_SCAN_S`` (rows below the bound: requeued, rolled back by a crashed
        consumer, or committed late by another producer)."""
        with self.backend.converting("receive from"):
            ids: list[int] | None = None
            bodies: list[bytes] = []
            if self.after is not None and time.monotonic() < self.full_scan_at:
                ids, bodies = _one_row(self.cur.execute(self.q_claim_after, {"after": self.after, "limit": limit}))
            if ids is None:
                ids, bodies = _one_row(self.cur.execute(self.q_claim, {"limit": limit}))
                self.full_scan_at = time.monotonic() + FULL_SCAN_S
            if ids is None and not self.unsettled:
                self.conn.rollback()  # nothing claimed: do not sit idle in a transaction
        if ids is None:
            return Batch()
        self.after = ids[-1]
        self.unsettled.update(ids)
        return Batch(bodies, ids)

    def ack(self, batch: Batch) -> None:
        if batch:
            self._settled(batch.receipts)

    def nack(self, batch: Batch, *, requeue: bool = True) -> None:
        """``requeue=True`` puts the rows back under their ids (they keep their place);
        ``requeue=False`` moves them to the dead-letter table, never delivered again."""
        if not batch:
            return
        with self.backend.converting("nack on"):
            self.cur.execute(
                self.q_requeue if requeue else self.q_dead, {"ids": list(batch.receipts), "bodies": list(batch.bodies)}
            )
        self._settled(batch.receipts)
        log_nacked(log, self.backend.name, len(batch), requeue=requeue)

    def _settled(self, ids: Sequence[int]) -> None:
        self.unsettled.difference_update(ids)
        if not self.unsettled:
            with self.backend.converting("commit on"):
                self.conn.commit()

    def close(self) -> None:
        if self.conn.closed:
            return
        try:
            if self.conn.info.transaction_status != TransactionStatus.IDLE:
                self.conn.rollback()  # un-acked rows come back at once
        except psycopg.OperationalError:
            pass  # the connection is gone: the server rolls the transaction back itself
        finally:
            self.unsettled.clear()
            self.conn.close()
            self.waiter.close()


class _Listener:
    """A ``Poller``'s interface for a consumer that sleeps on LISTEN: ask when notified, at once
    after a full batch, and every ``fallback_s`` regardless (a rollback notifies nobody)."""

    def __init__(self, conn: psycopg.Connection, fallback_s: float) -> None:
        self.conn, self.fallback_s = conn, fallback_s
        self.woken, self.next_at = True, 0.0

    def due(self) -> bool:
        return self.woken or time.monotonic() >= self.next_at

    def claimed(self, got: int, asked: int) -> None:
        self.woken = False
        self.next_at = time.monotonic() + (0.0 if got >= asked else self.fallback_s)

    def wait(self, budget_s: float) -> None:
        pause = min(budget_s, self.next_at - time.monotonic())
        if pause <= 0:
            return
        for _ in self.conn.notifies(timeout=pause, stop_after=1):
            self.woken = True
        if self.woken:
            for _ in self.conn.notifies(timeout=0):
                pass  # one claim answers every wake-up received so far

    def close(self) -> None:
        self.conn.close()
