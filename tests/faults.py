"""Make a server close one run's connections, and nobody else's: the "server lost mid-run"
fault of the contract suite, and the runner's own control connection lost.

Each cutter asks the server itself to end the connections, found by the name the backend
gives them (Postgres ``application_name``, Redis ``CLIENT SETNAME``, AMQP ``connection_name``)
or, where MariaDB has no such name, by the run's table in the statement a session is running
(workers) or by the session id of the backend's control connection. ``CUTTERS`` end the
workers' connections and leave the runner's control connection alone, so the run can still be
judged and cleaned up; ``CONTROL_CUTTERS`` end only the control connection.
Each returns how many connections it ended (0: none found yet, the caller tries again).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable

import psycopg
import pymysql
import redis

from queues.backends import Backend
from queues.backends.postgres import control_connection_name
from queues.backends.sqlfiles import table_name
from tests.services import backend_url

WORKER_ROLES = ("producer", "consumer")
CONTROL_ROLE = "control"


def cut_postgres(backend: Backend, queue: str) -> int:
    table = table_name(queue)
    return _terminate_postgres(backend, [f"imq {role} {table}"[:63] for role in WORKER_ROLES])  # as truncated


def _terminate_postgres(backend: Backend, names: list[str]) -> int:
    with psycopg.connect(backend_url(backend.name), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ANY(%s)", (names,)
        ).fetchall()
    return sum(1 for (terminated,) in rows if terminated)


def _mysql_admin() -> pymysql.connections.Connection:
    from urllib.parse import urlsplit

    url = urlsplit(backend_url("mysql"))
    return pymysql.connect(
        host=url.hostname, port=url.port or 3306, user=url.username or "root", password=url.password or "",
        database=url.path.lstrip("/") or None, autocommit=True,
    )


def cut_mysql(backend: Backend, queue: str) -> int:
    """``KILL CONNECTION`` of the sessions running a statement on the run's table (claims and
    inserts; the runner's ``SELECT COUNT`` of the depth is spared)."""
    conn = _mysql_admin()
    killed = 0
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT id FROM information_schema.processlist WHERE id <> CONNECTION_ID() "
                "AND info LIKE %s AND info NOT LIKE 'SELECT COUNT%%'",
                (f"%{table_name(queue)}%",),
            )
            for (session,) in cur.fetchall():
                try:
                    cur.execute(f"KILL CONNECTION {int(session)}")
                    killed += 1
                except pymysql.MySQLError:
                    pass  # it ended in the meantime
    finally:
        conn.close()
    return killed


def cut_redis(backend: Backend, queue: str) -> int:
    return _kill_redis_clients(backend, {f"imq:{backend.namespace}:{role}" for role in WORKER_ROLES})


def _kill_redis_clients(backend: Backend, names: set[str]) -> int:
    admin = redis.Redis.from_url(backend_url(backend.name))
    try:
        return sum(admin.client_kill_filter(_id=c["id"]) for c in admin.client_list() if c.get("name") in names)
    finally:
        admin.close()


def cut_rabbitmq(backend: Backend, queue: str) -> int:
    """``rabbitmqctl close_connection`` (the management API is not enabled on this machine)."""
    return _close_amqp_connections(backend, WORKER_ROLES)


def _close_amqp_connections(backend: Backend, roles: tuple[str, ...]) -> int:
    ctl = shutil.which("rabbitmqctl")
    assert ctl, "rabbitmqctl is needed to make the broker close a connection"
    listing = subprocess.run(
        [ctl, "-q", "list_connections", "pid", "client_properties"], capture_output=True, text=True, timeout=60
    ).stdout
    pattern = re.compile(rf"imq:{re.escape(backend.namespace)}:({'|'.join(roles)})\b")
    closed = 0
    for line in listing.splitlines():
        if pattern.search(line):
            pid = line.split("\t", 1)[0]
            subprocess.run([ctl, "-q", "close_connection", pid, "imqueue test"], capture_output=True, timeout=60)
            closed += 1
    return closed


def cut_postgres_library(backend: Backend, queue: str) -> int:
    """A task library's connections on Postgres, named ``imq <role> <namespace>``."""
    return _terminate_postgres(backend, [f"imq {role} {backend.namespace}"[:63] for role in WORKER_ROLES])


CUTTERS: dict[str, Callable[[Backend, str], int]] = {
    "postgres": cut_postgres,
    "postgres-notify": cut_postgres,
    "mysql": cut_mysql,
    "redis-list": cut_redis,
    "redis-list-noack": cut_redis,
    "redis-stream": cut_redis,
    "rabbitmq": cut_rabbitmq,
    # the task libraries: their clients are named like ours (or, on Postgres, by the namespace)
    "celery-redis": cut_redis,
    "celery-rabbitmq": cut_rabbitmq,
    "dramatiq-redis": cut_redis,
    "dramatiq-rabbitmq": cut_rabbitmq,
    "huey": cut_redis,
    "rq": cut_redis,
    "procrastinate": cut_postgres_library,
    "django-q2-orm": cut_postgres_library,
    "django-q2-redis": cut_redis,
}


def cut_postgres_control(backend: Backend) -> int:
    return _terminate_postgres(backend, [control_connection_name(backend.namespace)])


def cut_mysql_control(backend: Backend) -> int:
    """``KILL CONNECTION`` of the control connection's session, by its id: MariaDB sessions
    have no name another session could see (connection attributes need performance_schema)."""
    session = backend._admin  # the test looks inside: the product has no reason to expose it
    if session is None or not session.open:
        return 0
    conn = _mysql_admin()
    try:
        with conn.cursor() as cur:
            cur.execute(f"KILL CONNECTION {int(session.thread_id())}")
    finally:
        conn.close()
    return 1


def cut_redis_control(backend: Backend) -> int:
    return _kill_redis_clients(backend, {f"imq:{backend.namespace}:{CONTROL_ROLE}"})


def cut_rabbitmq_control(backend: Backend) -> int:
    return _close_amqp_connections(backend, (CONTROL_ROLE,))


#: ``cutter(backend) -> int``: end the backend's control connection (the runner's own).
CONTROL_CUTTERS: dict[str, Callable[[Backend], int]] = {
    "postgres": cut_postgres_control,
    "postgres-notify": cut_postgres_control,
    "mysql": cut_mysql_control,
    "redis-list": cut_redis_control,
    "redis-list-noack": cut_redis_control,
    "redis-stream": cut_redis_control,
    "rabbitmq": cut_rabbitmq_control,
    "celery-redis": cut_redis_control,
    "celery-rabbitmq": cut_rabbitmq_control,
    "dramatiq-redis": cut_redis_control,
    "dramatiq-rabbitmq": cut_rabbitmq_control,
    "huey": cut_redis_control,
    "rq": cut_redis_control,
    "procrastinate": cut_postgres_control,
    "django-q2-orm": cut_postgres_control,
    "django-q2-redis": cut_redis_control,
}
