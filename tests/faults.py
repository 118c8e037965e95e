"""Make a server close one run's connections, and nobody else's: the "server lost mid-run"
fault of the contract suite.

Each cutter asks the server itself to end the connections, found by the name the backend
gives them (Postgres ``application_name``, Redis ``CLIENT SETNAME``, AMQP ``connection_name``)
or, where MariaDB has no such name, by the run's table in the statement a session is running.
The runner's own admin connection is left alone, so the run can still be judged and cleaned up.
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
from queues.backends.sqlfiles import table_name
from tests.services import backend_url

WORKER_ROLES = ("producer", "consumer")


def cut_postgres(backend: Backend, queue: str) -> int:
    table = table_name(queue)
    names = [f"imq {role} {table}"[:63] for role in WORKER_ROLES]  # as the backend truncates them
    with psycopg.connect(backend_url(backend.name), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ANY(%s)", (names,)
        ).fetchall()
    return sum(1 for (terminated,) in rows if terminated)


def cut_mysql(backend: Backend, queue: str) -> int:
    """``KILL CONNECTION`` of the sessions running a statement on the run's table (claims and
    inserts; the runner's ``SELECT COUNT`` of the depth is spared)."""
    from urllib.parse import urlsplit

    url = urlsplit(backend_url(backend.name))
    conn = pymysql.connect(
        host=url.hostname, port=url.port or 3306, user=url.username or "root", password=url.password or "",
        database=url.path.lstrip("/") or None, autocommit=True,
    )
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
    names = {f"imq:{backend.namespace}:{role}" for role in WORKER_ROLES}
    admin = redis.Redis.from_url(backend_url(backend.name))
    try:
        return sum(admin.client_kill_filter(_id=c["id"]) for c in admin.client_list() if c.get("name") in names)
    finally:
        admin.close()


def cut_rabbitmq(backend: Backend, queue: str) -> int:
    """``rabbitmqctl close_connection`` (the management API is not enabled on this machine)."""
    ctl = shutil.which("rabbitmqctl")
    assert ctl, "rabbitmqctl is needed to make the broker close a connection"
    listing = subprocess.run(
        [ctl, "-q", "list_connections", "pid", "client_properties"], capture_output=True, text=True, timeout=60
    ).stdout
    pattern = re.compile(rf"imq:{re.escape(backend.namespace)}:({'|'.join(WORKER_ROLES)})\b")
    closed = 0
    for line in listing.splitlines():
        if pattern.search(line):
            pid = line.split("\t", 1)[0]
            subprocess.run([ctl, "-q", "close_connection", pid, "imqueue test"], capture_output=True, timeout=60)
            closed += 1
    return closed


CUTTERS: dict[str, Callable[[Backend, str], int]] = {
    "postgres": cut_postgres,
    "postgres-notify": cut_postgres,
    "mysql": cut_mysql,
    "redis-list": cut_redis,
    "redis-list-noack": cut_redis,
    "redis-stream": cut_redis,
    "rabbitmq": cut_rabbitmq,
}
