"""The kinds of private server (``queues.faults.servers``): Redis, Postgres, MariaDB.

Each says which programs it needs, how its data directory is made, its command line, how to
tell that it answers, and what its ``persistence`` modes mean. Drivers are imported where they
are used, as the backends do, so a machine with one of them installed can run the others.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from queues.faults.servers import PrivateServer, find_binary

PING_TIMEOUT_S = 1


class RedisServer(PrivateServer):
    """``redis-server`` without snapshots: ``none`` keeps nothing on disk (a restart empties
    it), ``aof-always`` appends every write to the AOF and fsyncs it before answering
    (``appendfsync always``), and replays it on start."""

    kind = "redis"
    persistence_modes = ("none", "aof-always")
    durable_modes = ("aof-always",)

    def find_binaries(self) -> dict[str, str]:
        return {"server": find_binary("redis-server", "install Redis (Debian: apt-get install redis-server)")}

    def url_at(self, host: str) -> str:
        return f"redis://{host}:{self.port}/0"

    def command(self) -> list[str]:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]
        # protected mode refuses every client off loopback when there is no password; the bind
        # list is the protection here: only the addresses the owner chose (veth ends) listen
        protected = "yes" if all(ipaddress.ip_address(a).is_loopback for a in self.bind) else "no"
        return [
            self.binaries["server"],
            "--port",
            str(self.port),
            "--bind",
            *self.bind,
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            protected,
            *aof,
        ]

    def ping(self) -> None:
        # this kind's driver, imported when its server is first asked: a run with a private
        # server of another kind never pays for it
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis(
            host=self.bind[0],
            port=self.port,
            socket_connect_timeout=PING_TIMEOUT_S,
            socket_timeout=PING_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )  # the caller asks again; redis-py's retries back off for seconds
        try:
            client.ping()  # raises BusyLoadingError while the AOF replays
        finally:
            client.close()


class PostgresServer(PrivateServer):
    """A cluster made by ``initdb`` (``--no-sync``: a fresh cluster need not be on disk before
    it is used), run by the ``postgres`` postmaster itself, not ``pg_ctl`` (which detaches it
    from us), with ``fsync`` and ``synchronous_commit`` on: a committed row survives a crash.
    Trust authentication, user ``postgres``, database ``test`` (as the shared server)."""

    kind = "postgres"
    persistence_modes = ("fsync",)
    durable_modes = ("fsync",)
    system_user = "postgres"
    database = "test"

    def find_binaries(self) -> dict[str, str]:
        initdb = find_binary(
            "initdb",
            "install PostgreSQL (Debian: apt-get install postgresql; the programs are in "
            "/usr/lib/postgresql/<version>/bin)",
            search=("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin"),
        )
        return {"initdb": initdb, "server": os.path.join(os.path.dirname(initdb), "postgres")}

    def url_at(self, host: str) -> str:
        return f"postgresql://postgres@{host}:{self.port}/{self.database}"

    @property
    def data(self) -> str:
        return os.path.join(str(self.dir), "data")

    def initialise(self) -> None:
        self.run(
            [
                self.binaries["initdb"],
                "-D",
                self.data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            "initdb",
        )

    def command(self) -> list[str]:
        settings = {
            "listen_addresses": ",".join(self.bind),
            "fsync": "on",
            "synchronous_commit": "on",
            "shared_buffers": "32MB",
            "max_connections": "50",
            "logging_collector": "off",
        }
        options = [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
        return [self.binaries["server"], "-D", self.data, "-p", str(self.port), "-k", str(self.dir), *options]

    def _connect(self, database: str) -> Any:
        import psycopg  # this kind's driver, imported when its server is first asked (as Redis's)

        return psycopg.connect(
            host=self.bind[0], port=self.port, user="postgres", dbname=database, connect_timeout=2, autocommit=True
        )

    def ping(self) -> None:
        with self._connect("postgres") as conn:  # refused while it recovers from a crash
            conn.execute("SELECT 1")

    def after_first_start(self) -> None:
        with self._connect("postgres") as conn:
            conn.execute(f"CREATE DATABASE {self.database}")


class MariaDBServer(PrivateServer):
    """``mariadb-install-db`` then ``mariadbd``, with ``innodb_flush_log_at_trx_commit=1`` (the
    redo log is flushed at every commit: a committed row survives a crash) and small buffers.
    User ``root`` without a password, database ``test`` (as the shared server)."""

    kind = "mariadb"
    persistence_modes = ("fsync",)
    durable_modes = ("fsync",)
    system_user = "mysql"
    database = "test"
    INSTALL = "install MariaDB (Debian: apt-get install mariadb-server)"
    SETTINGS = ("--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M", "--skip-name-resolve")

    def find_binaries(self) -> dict[str, str]:
        return {
            "install": find_binary("mariadb-install-db", self.INSTALL),
            "server": find_binary("mariadbd", self.INSTALL),
        }

    def url_at(self, host: str) -> str:
        return f"mysql://root@{host}:{self.port}/{self.database}"

    @property
    def data(self) -> str:
        return os.path.join(str(self.dir), "data")

    def initialise(self) -> None:
        self.run(
            [
                self.binaries["install"],
                "--no-defaults",
                f"--datadir={self.data}",
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
                *self.SETTINGS,
            ],
            "mariadb-install-db",
        )

    def command(self) -> list[str]:
        return [
            self.binaries["server"],
            "--no-defaults",
            f"--datadir={self.data}",
            f"--port={self.port}",
            f"--bind-address={','.join(self.bind)}",
            f"--socket={self.dir}/mariadbd.sock",
            f"--pid-file={self.dir}/mariadbd.pid",
            "--innodb-flush-log-at-trx-commit=1",
            "--skip-log-bin",
            *self.SETTINGS,
        ]

    def _connect(self, database: str | None) -> Any:
        import pymysql  # this kind's driver, imported when its server is first asked (as Redis's)

        return pymysql.connect(
            host=self.bind[0],
            port=self.port,
            user="root",
            database=database,
            connect_timeout=PING_TIMEOUT_S,
            autocommit=True,
        )

    def ping(self) -> None:
        self._connect(None).close()

    def after_first_start(self) -> None:
        conn = self._connect(None)
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        finally:
            conn.close()
