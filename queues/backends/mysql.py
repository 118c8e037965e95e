"""MariaDB/MySQL InnoDB tables as queues, claimed with ``FOR UPDATE SKIP LOCKED``.

Needs MariaDB 10.6+ or MySQL 8+ (``SKIP LOCKED``). Each queue is a table of its own with a
``..._dead`` table beside it (names from ``sqlfiles.table_name``); ``declare`` creates them and
``delete`` drops them, so runs leave nothing behind. The SQL is in ``sql/mysql.sql``.

Driver: PyMySQL. It is pure Python, maintained (regular releases, supports MariaDB 10.x/11.x
and MySQL 8/9), installs from pip alone on any platform, and is already a dependency of the
project. mysqlclient parses rows in C and is faster, but it needs the MySQL client headers and
a compiler to install; a queue lab should install with pip alone.

Claiming: a consumer locks a batch with ``SELECT ... ORDER BY id LIMIT n FOR UPDATE SKIP
LOCKED`` in its open transaction (MySQL cannot ``DELETE`` with ``SKIP LOCKED`` or from a
subquery on the same table). Once every claimed message is settled it sends, in one round
trip, the dead-letter copy, the ``DELETE`` of the acked and dead rows and ``COMMIT``.
``nack(requeue=True)`` simply leaves the row in place (it keeps its place in FIFO order and its
lock is released by that commit). ``close``, a lost connection or a SIGKILLed consumer roll
back, and the rows are claimable again at once: at-least-once without a lease or a timeout.
Sessions use READ COMMITTED so that ``SKIP LOCKED`` takes record locks only, not the gap locks
that would block producers' inserts. A claimed batch comes back as one row (``GROUP_CONCAT``
of ids and hex bodies): PyMySQL parses rows in Python, and reading 1000 rows cost a consumer
more than everything else it does (2.9 s against 1.7 s of consumer time per 200k events).
Deletes join the id list (``JSON_TABLE ... STRAIGHT_JOIN``) so that each is a primary-key
lookup: on a small table ``WHERE id IN (...)`` becomes a full scan that waits on the rows
other consumers hold, and deadlocks.

Consumers poll with back-off (``polling.Poller``): MySQL has no LISTEN. Connections have
connect, read and write timeouts, so a server lost mid-run makes a worker raise, not hang.

Cutting a run's connections: a MariaDB session has no name another session can read (connection
attributes need ``performance_schema``, off by default), so ``cut_connections`` finds the
workers by the run's table in the statement they are running, sampling the process list for
``CUT_WINDOW_S``. A worker that runs no statement in that window (a producer between batches
of a slow schedule, a consumer waiting ``poll_max_interval_s``) escapes the cut.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql
from pymysql.constants import CLIENT
from pymysql.constants.ER import NO_SUCH_THREAD as ER_NO_SUCH_THREAD

from queues.backends import sqlfiles
from queues.backends.base import CONNECT_TIMEOUT, Backend, Batch, Capabilities, Consumer, Producer, log_nacked
from queues.backends.options import Option
from queues.backends.polling import POLL_OPTIONS, Poller, receive_when_due
from queues.errors import OperationFailed
from queues.workload.events import PackedMessages

log = logging.getLogger(__name__)

QUERIES = sqlfiles.queries("mysql")
#: Keeps one INSERT well under the server's max_allowed_packet (16 MiB by default).
MAX_INSERT_CHARS = 4 * 1024 * 1024
PURGE_CHUNK = 10_000
#: How long ``cut_connections`` watches the process list for the run's workers, and how often.
CUT_WINDOW_S = 1.0
CUT_SAMPLE_S = 0.005


def query(name: str, table: str, **lists: str) -> str:
    """Query ``name`` with the backquoted identifiers of ``table`` (already safe) filled in."""
    return QUERIES[name].format(queue=f"`{table}`", dead=f"`{table}_dead`", **lists)


def id_list(ids: Sequence[int]) -> str:
    return ",".join(map(str, map(int, ids)))


def value_rows(messages: Sequence[bytes]) -> Iterator[str]:
    """``(X'<hex>')`` per message: hex literals need no escaping and cannot inject anything."""
    if isinstance(messages, PackedMessages) and messages.size:
        text, step = messages.buffer.hex(), 2 * messages.size
        return (f"(X'{text[i : i + step]}')" for i in range(0, len(text), step))
    return (f"(X'{body.hex()}')" for body in messages)


def chunked_values(messages: Sequence[bytes]) -> Iterator[str]:
    """VALUES lists of at most ``MAX_INSERT_CHARS`` characters each."""
    chunk: list[str] = []
    size = 0
    for row in value_rows(messages):
        if chunk and size + len(row) > MAX_INSERT_CHARS:
            yield ",".join(chunk)
            chunk, size = [], 0
        chunk.append(row)
        size += len(row) + 1
    if chunk:
        yield ",".join(chunk)


class MySQLBackend(Backend):
    name = "mysql"
    capabilities = Capabilities(native_batch=True)
    url_setting = "IMQ_MYSQL_URL"
    default_url = "mysql://root@127.0.0.1:3306/test"
    url_schemes = ("mysql", "mariadb", "mysql+pymysql")
    # lost, killed, timed out (PyMySQL raises socket errors as they are in some paths)
    unavailable_errors = (pymysql.OperationalError, pymysql.InterfaceError, OSError)
    failed_errors = (pymysql.MySQLError,)
    options = (
        *POLL_OPTIONS,
        Option("timeout_s", float, 30.0, "socket read and write timeouts", minimum=0.1, maximum=86_400, unit="s"),
        CONNECT_TIMEOUT,
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url = self.url or self.default_url
        self.poll_interval_s = float(self.option_values["poll_interval_s"])
        self.poll_max_interval_s = float(self.option_values["poll_max_interval_s"])
        self.timeout_s = float(self.option_values["timeout_s"])
        self._admin: pymysql.connections.Connection | None = None

    # -- connections -----------------------------------------------------------------------

    def _fresh_state(self) -> dict[str, Any]:
        return {"_admin": None}  # a forked worker must never use the runner's socket

    def _connect(self, *, autocommit: bool) -> pymysql.connections.Connection:
        """A new connection with our session settings and timeouts. Raises ``BackendUnavailable``.

        The handshake (the server's greeting, authentication, the session settings) must come
        within ``connect_timeout_s``: PyMySQL reads it under the read timeout, so the
        connection starts with that one and takes ``timeout_s`` for the run's statements once
        it is open."""
        with self.parsing_url():
            parts = urlsplit(self.url)
            where = {
                "host": parts.hostname or "127.0.0.1",
                "port": parts.port or 3306,
                "user": unquote(parts.username or "root"),
                "password": unquote(parts.password or ""),
                "database": unquote(parts.path.lstrip("/")) or "test",
            }
        handshake_s = self.connect_timeout_s
        with self.converting("connect to", unavailable=(pymysql.MySQLError,)):  # refused credentials too
            conn = pymysql.connect(
                **where,
                connect_timeout=handshake_s,
                read_timeout=handshake_s,
                write_timeout=handshake_s,
                autocommit=autocommit,
                client_flag=CLIENT.MULTI_STATEMENTS,  # settle + COMMIT in one round trip
                init_command=QUERIES["session"],
            )
        # PyMySQL sets the socket's timeout from these two before each read and write (2.x has
        # no public setter): from here on a statement may take timeout_s
        conn._read_timeout = conn._write_timeout = self.timeout_s
        return conn

    def connect(self) -> None:
        if self._admin is None or not self._admin.open:  # closed: see ``Backend.reconnecting``
            self._admin = self._connect(autocommit=True)

    def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None and admin.open:
            admin.close()

    def _fetch(self, sql: str, args: Any = None, doing: str = "run a query on") -> tuple:
        """All rows of one statement on the control connection."""
        self.connect()
        assert self._admin is not None
        with self.converting(doing), self._admin.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    # -- queues ----------------------------------------------------------------------------

    def declare(self, queue: str) -> None:
        """Create the queue and dead-letter tables. Idempotent."""
        table = sqlfiles.table_name(queue)
        self._fetch(query("create_queue", table), doing="declare a queue on")
        self._fetch(query("create_dead", table), doing="declare a queue on")

    def purge(self, queue: str) -> int:
        """Remove the ready messages (not those claimed by a live consumer); return how many."""
        table = sqlfiles.table_name(queue)
        self.connect()
        assert self._admin is not None
        with self.converting("purge a queue on"), self._admin.cursor() as cur:
            self._admin.begin()
            cur.execute(query("ready_ids", table))
            ids = [row[0] for row in cur.fetchall()]
            for start in range(0, len(ids), PURGE_CHUNK):
                cur.execute(query("delete_ids", table, ids=id_list(ids[start : start + PURGE_CHUNK])))
            self._admin.commit()
        return len(ids)

    def delete(self, queue: str) -> None:
        """Drop the queue's tables. Idempotent."""
        with self.deleting(queue):
            self._fetch(query("drop_tables", sqlfiles.table_name(queue)))

    def depth(self, queue: str) -> int:
        """Exact: ``COUNT(*)``; claimed rows are only deleted when their consumer commits."""
        return int(self._fetch(query("depth", sqlfiles.table_name(queue)), doing="measure a queue on")[0][0])

    def dead_letters(self, queue: str) -> list[bytes]:
        """The rows of the dead-letter table, oldest first (reading keeps them)."""
        rows = self._fetch(query("dead_letters", sqlfiles.table_name(queue)), doing="read the dead letters on")
        return [bytes(body) for (body,) in rows]

    def list_queues(self, namespace: str) -> list[str]:
        """The queues whose tables are on the server (``information_schema``, by name prefix)."""
        prefix = sqlfiles.table_prefix(namespace)
        rows = self._fetch(QUERIES["list_objects"], (prefix, prefix), doing="list the tables on")
        return sorted({q for (name,) in rows if (q := sqlfiles.queue_of_object(name, namespace))})

    def count_objects(self, prefix: str) -> int:
        """How many tables start with ``prefix`` (runs must leave nothing behind)."""
        return int(self._fetch(QUERIES["count_objects"], (prefix, prefix), doing="count the tables on")[0][0])

    def cut_connections(self, queue: str) -> int:
        """``KILL CONNECTION`` of every session seen running a statement on ``queue``'s table
        within ``CUT_WINDOW_S`` (see the module docstring), the control connection spared."""
        table, control = sqlfiles.table_name(queue), self._control_session()
        killed: set[int] = set()
        admin = self._connect(autocommit=True)
        try:
            with self.converting("end connections on"), admin.cursor() as cur:
                deadline = time.monotonic() + CUT_WINDOW_S
                while time.monotonic() < deadline:
                    cur.execute(QUERIES["sessions_on_table"], (control, table))
                    for (session,) in cur.fetchall():
                        if session not in killed and _kill(cur, session):
                            killed.add(session)
                    time.sleep(CUT_SAMPLE_S)
        finally:
            admin.close()
        return len(killed)

    def cut_control_connection(self) -> int:
        """``KILL CONNECTION`` of the control connection, by its session id."""
        session = self._control_session()
        if not session:
            return 0
        admin = self._connect(autocommit=True)
        try:
            with self.converting("end connections on"), admin.cursor() as cur:
                return int(_kill(cur, session))
        finally:
            admin.close()

    def _control_session(self) -> int:
        """The server's id of the control connection; 0 (no session has it) when none is open.
        Read, not asked: the connection may be busy in the runner's thread."""
        admin = self._admin
        return int(admin.thread_id()) if admin is not None and admin.open else 0

    def environment(self) -> dict[str, Any]:
        self.connect()
        assert self._admin is not None
        with self.converting("read the settings of"), self._admin.cursor() as cur:
            cur.execute(QUERIES["environment"])
            names = [column[0] for column in cur.description]
            settings = cur.fetchone()
        return {
            **dict(zip(names, settings, strict=True)),
            "isolation": "READ COMMITTED",
            "driver": f"PyMySQL {pymysql.__version__}",
            "claim": "SELECT ... FOR UPDATE SKIP LOCKED; DELETE + COMMIT on ack",
            **Poller(self.poll_interval_s, self.poll_max_interval_s).describe(),
        }

    # -- workers ---------------------------------------------------------------------------

    def producer(self, queue: str) -> Producer:
        return _Producer(self, self._connect(autocommit=True), sqlfiles.table_name(queue))

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        poller = Poller(self.poll_interval_s, self.poll_max_interval_s)
        return _Consumer(self, self._connect(autocommit=False), sqlfiles.table_name(queue), poller)


def _kill(cur: Any, session: int) -> bool:
    """``KILL CONNECTION session``; False when it had ended in the meantime."""
    try:
        cur.execute(f"KILL CONNECTION {int(session)}")
    except pymysql.MySQLError as exc:
        if exc.args and exc.args[0] == ER_NO_SUCH_THREAD:
            return False
        raise
    return True


class _Producer(Producer):
    """One multi-row INSERT of hex literals per batch (autocommit: one commit per batch)."""

    def __init__(self, backend: MySQLBackend, conn: pymysql.connections.Connection, table: str) -> None:
        self.backend, self.conn, self.table = backend, conn, table
        self.cur = conn.cursor()

    def send_batch(self, messages: Sequence[bytes]) -> None:
        with self.backend.converting("send to"):
            for values in chunked_values(messages):
                self.cur.execute(query("insert_values", self.table, values=values))

    def close(self) -> None:
        if self.conn.open:
            self.conn.close()


class _Consumer(Consumer):
    """Locks claims in one open transaction; deletes and commits once all are settled."""

    def __init__(self, backend: MySQLBackend, conn: pymysql.connections.Connection, table: str, poller: Poller) -> None:
        self.backend, self.conn, self.table, self.poller = backend, conn, table, poller
        self.cur = conn.cursor()
        self.q_claim = query("claim", table)
        self.held: list[int] = []  # every row locked by the open transaction
        self.unsettled: set[int] = set()  # locked in the open transaction, not yet settled
        self.done: list[int] = []  # acked or dead: deleted at commit
        self.dead: list[int] = []  # copied to the dead-letter table at commit

    def receive_batch(self, max_messages: int, timeout_s: float) -> Batch:
        return receive_when_due(self.poller, self._claim, max_messages, timeout_s)

    def _claim(self, limit: int) -> Batch:
        with self.backend.converting("receive from"):
            if self.held:
                self.cur.execute(query("claim_more", self.table, ids=id_list(self.held)), (limit,))
            else:
                self.cur.execute(self.q_claim, (limit,))
            count, size, id_text, hex_text = self.cur.fetchone()
            if not count and not self.unsettled:
                self.conn.rollback()  # nothing locked: do not sit in an open transaction
        if not count:
            return Batch()
        ids = [int(i) for i in id_text.split(",")]
        bodies = [bytes.fromhex(h) for h in hex_text.split(",")]
        self.held.extend(ids)
        self.unsettled.update(ids)
        if len(ids) != count or len(bodies) != count or sum(map(len, bodies)) != size:
            raise OperationFailed(
                f"{self.backend.name}: a batch of {count} messages ({size} bytes) exceeds group_concat_max_len; "
                "use smaller batches"
            )
        return Batch(bodies, ids)

    def ack(self, batch: Batch) -> None:
        if batch:
            self.done.extend(batch.receipts)
            self._settled(batch.receipts)

    def nack(self, batch: Batch, *, requeue: bool = True) -> None:
        """``requeue=True`` leaves the rows where they are (unlocked at commit, same place in
        line); ``requeue=False`` moves them to the dead-letter table, never delivered again."""
        if not batch:
            return
        if not requeue:
            self.dead.extend(batch.receipts)
            self.done.extend(batch.receipts)
        self._settled(batch.receipts)
        log_nacked(log, self.backend.name, len(batch), requeue=requeue)

    def _settled(self, ids: Sequence[int]) -> None:
        self.unsettled.difference_update(ids)
        if self.unsettled:
            return
        statements = []
        if self.dead:
            statements.append(query("dead_letter", self.table, ids=id_list(self.dead)))
        if self.done:
            statements.append(query("delete_ids", self.table, ids=id_list(self.done)))
        statements.append("COMMIT")
        with self.backend.converting("ack on"):
            self.cur.execute(";".join(statements))
            while self.cur.nextset():
                pass  # every statement's result must be read before the next query
        self.done, self.dead, self.held = [], [], []

    def close(self) -> None:
        if not self.conn.open:
            return
        try:
            self.conn.rollback()  # un-acked rows come back at once
        except (pymysql.MySQLError, OSError):
            pass  # the connection is gone: the server rolls the transaction back itself
        finally:
            self.unsettled.clear()
            self.held.clear()
            self.conn.close()
