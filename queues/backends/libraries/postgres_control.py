"""The runner's control connection for the task libraries on PostgreSQL: procrastinate and
django-q2's ORM broker. Depth, purge, delete and the list of a run's queues are counted in the
library's table of tasks, on the lab's own psycopg connection.

Each library keeps its tables in a PostgreSQL schema of its own, first on the ``search_path``
of every connection (the control one, and the library's producers' and workers'), created on
first use under an advisory lock; a queue is a value of a column of the task table, never a
table. The library's module names the schema, the table, the column, which rows count as in
the queue and which a purge may remove, and creates its tables.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from queues.backends.libraries.base import LibraryBackend
from queues.backends.options import Option
from queues.backends.postgres import (
    MAX_NAME_CHARS,
    PG_CONNECT_TIMEOUT,
    control_connection_name,
    terminate_sessions,
)


def like_prefix(namespace: str) -> str:
    """A ``LIKE`` pattern for the queues under ``namespace`` (its wildcards escaped)."""
    return namespace.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ".%"


class PostgresLibraryBackend(LibraryBackend):
    """A task library on PostgreSQL. Subclasses name the library's schema and task table, and
    create the tables (``create_tables``)."""

    url_setting = "IMQ_POSTGRES_URL"
    default_url = "postgresql://postgres@127.0.0.1:5432/test"
    # typed as Backend's: a library adds its own (procrastinate's connector errors)
    unavailable_errors: ClassVar[tuple[type[BaseException], ...]] = (psycopg.OperationalError,)
    failed_errors = (psycopg.Error,)
    options: ClassVar[tuple[Option, ...]] = (PG_CONNECT_TIMEOUT,)
    #: The library's PostgreSQL schema, and the advisory lock taken while it is created.
    schema: ClassVar[str]
    schema_lock: ClassVar[int]
    #: The library's table of tasks, and its column naming a task's queue.
    task_table: ClassVar[str]
    queue_column: ClassVar[str]
    #: SQL conditions on a queue's task rows: those ``depth`` counts (waiting, and taken by a
    #: worker but not finished), and those ``purge`` removes (waiting: no worker holds them).
    in_queue: ClassVar[str]
    ready: ClassVar[str]
    #: libpq parameters a URL may override (``postgres.CONNECTION_DEFAULTS``, or none).
    connection_defaults: ClassVar[Mapping[str, Any]] = {}
    _admin: psycopg.Connection | None = None

    def _fresh_state(self) -> dict[str, Any]:
        return {"_admin": None}  # a forked worker must never use the runner's socket

    # -- connections -----------------------------------------------------------------------

    def conninfo_params(self, role: str) -> dict[str, Any]:
        """The URL's libpq parameters with our timeouts, an ``application_name`` for ``role``
        and the library's schema first on the ``search_path``."""
        with self.parsing_url():
            params = conninfo_to_dict(self.url or self.default_url)
        for key, value in self.connection_defaults.items():
            params.setdefault(key, value)
        params["connect_timeout"] = max(2, int(self.connect_timeout_s + 0.999))  # libpq: whole seconds
        params["application_name"] = (
            control_connection_name(self.namespace, self.instance_tag)
            if role == "control"
            else f"imq {role} {self.namespace}"
        )[:MAX_NAME_CHARS]
        params["options"] = " ".join(filter(None, [str(params.get("options") or ""), f"-c search_path={self.schema}"]))
        return params

    def conninfo(self, role: str) -> str:
        """``conninfo_params`` as a connection string."""
        return make_conninfo("", **self.conninfo_params(role))

    def probe(self, role: str) -> None:
        with self.converting("connect to", unavailable=(psycopg.Error,)):
            psycopg.connect(self.conninfo(role)).close()

    def cut_control_connection(self) -> int:
        with self.converting("end connections on", unavailable=(psycopg.OperationalError,)):
            with psycopg.connect(self.conninfo(f"cut {self.instance_tag}"), autocommit=True) as admin:
                return terminate_sessions(admin, [control_connection_name(self.namespace, self.instance_tag)])

    def connect(self) -> None:
        if self._admin is None or self._admin.closed:  # closed: see ``Backend.reconnecting``
            with self.converting("connect to", unavailable=(psycopg.Error,)):
                self._admin = psycopg.connect(self.conninfo("control"), autocommit=True)
            self.create_tables(self._admin)

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    @property
    def admin(self) -> psycopg.Connection:
        """The control connection, opened (and the library's tables created) on first use."""
        self.connect()
        assert self._admin is not None
        return self._admin

    # -- the library's tables --------------------------------------------------------------

    def create_tables(self, conn: psycopg.Connection) -> None:
        """Create the library's tables in ``schema`` on ``conn``, unless they exist."""
        raise NotImplementedError

    def has_table(self, conn: psycopg.Connection, table: str) -> bool:
        return conn.execute("SELECT to_regclass(%s)", (f"{self.schema}.{table}",)).fetchone() != (None,)

    @contextmanager
    def schema_locked(self, conn: psycopg.Connection) -> Iterator[None]:
        """A transaction holding ``schema_lock``, the schema created: two runs starting at once
        do not both create the tables."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self.schema_lock,))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            yield

    # -- queues: rows of the task table ----------------------------------------------------

    def _tasks_query(self, template: str) -> sql.Composed:
        """``template`` with ``{table}``, ``{queue}`` (the column), ``{in_queue}`` and ``{ready}``."""
        return sql.SQL(template).format(
            table=sql.Identifier(self.task_table),
            queue=sql.Identifier(self.queue_column),
            in_queue=sql.SQL(self.in_queue),
            ready=sql.SQL(self.ready),
        )

    def _count(self, template: str, queue: str, doing: str) -> int:
        with self.converting(doing):
            row = self.admin.execute(self._tasks_query(template), (queue,)).fetchone()
        return int(row[0]) if row else 0

    def declare(self, queue: str) -> None:
        """Nothing per queue: a queue is a value of the task table's column (the tables are
        created on connecting)."""
        self.connect()

    def depth(self, queue: str) -> int:
        return self._count(
            "SELECT count(*) FROM {table} WHERE {queue} = %s AND {in_queue}", queue, "measure a queue on"
        )

    def purge(self, queue: str) -> int:
        return self._count(
            "WITH gone AS (DELETE FROM {table} WHERE {queue} = %s AND {ready} RETURNING 1) SELECT count(*) FROM gone",
            queue,
            "purge a queue on",
        )

    def delete(self, queue: str) -> None:
        with self.deleting(queue):
            self.admin.execute(self._tasks_query("DELETE FROM {table} WHERE {queue} = %s"), (queue,))

    def list_queues(self, namespace: str) -> list[str]:
        query = self._tasks_query("SELECT DISTINCT {queue} FROM {table} WHERE {queue} LIKE %s ORDER BY 1")
        with self.converting("list the queues on"):
            rows = self.admin.execute(query, (like_prefix(namespace),)).fetchall()
        return [row[0] for row in rows]

    def server_environment(self, *settings: str) -> dict[str, Any]:
        """The server, its version, the URL and the values of ``settings`` (``SHOW``)."""
        with self.converting("read the settings of"):
            values = {
                name: self.admin.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
                for name in ("server_version", *settings)
            }
        shown = {name: row[0] if row else None for name, row in values.items()}
        return {
            "server": "postgresql",
            "server_version": shown.pop("server_version"),
            "url": self.describe_url(),
            **shown,
        }
