"""What the Redis backends share: the client, which errors mean what, Lua scripts, the run's keys.

Every key of a queue starts with ``{<queue>}:`` (the braces make it one Redis Cluster hash slot
and a prefix nothing else uses), so ``delete`` can find and remove exactly what a run left.

Connection policy: no automatic retry. redis-py would resend a command after a broken
connection, and a resent push duplicates messages while a resent take script moves a second
batch whose reply nobody reads. A lost connection is therefore raised as ``BackendUnavailable``
and the runner fails the run, keeping what was counted. Socket timeouts bound every call, and
the handshake of every connection is bounded by ``connect_timeout_s``. The exception is the
runner's control connection, whose operations are idempotent (depth, delete): the runner
retries them on a new connection (``Backend.reconnecting``).
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any, ClassVar, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from queues.backends.base import CONNECT_TIMEOUT, Backend, Consumer
from queues.backends.options import Option

#: Longest a reply may take beyond a blocking command's own timeout.
SOCKET_TIMEOUT_S = 10.0
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
_NOT_IN_NAME = re.compile(r"[\x00-\x20\x7f]")  # what CLIENT SETNAME refuses
#: The roles of a run's worker connections.
WORKER_ROLES = ("producer", "consumer")


def load_lua(name: str) -> str:
    """The text of ``queues/backends/lua/<name>.lua`` (STYLE habit 5: scripts in named files)."""
    return resources.files("queues.backends").joinpath("lua", f"{name}.lua").read_text()


def as_bytes_list(reply: Any) -> list[bytes]:
    """A list reply as the bytes it is: our clients never set ``decode_responses``, which
    redis-py's types cannot know (they say ``bytes | str``)."""
    return cast(list[bytes], reply)


def key_prefix(queue: str) -> str:
    return "{" + queue + "}:"


def keys_pattern(queue: str) -> str:
    """A SCAN pattern matching every key of ``queue`` and nothing else."""
    return _GLOB_SPECIAL.sub(r"\\\1", key_prefix(queue)) + "*"


class RedisBase(Backend):
    """Connection handling shared by ``redis-list`` and ``redis-stream``."""

    url_setting = "IMQ_REDIS_URL"
    default_url = "redis://127.0.0.1:6379/0"
    url_schemes = ("redis", "rediss", "unix")
    # the connection failed or a reply did not come in time; any other error is the server's
    # answer (a script error, a wrong type) and fails only the operation
    unavailable_errors = (redis.ConnectionError, redis.TimeoutError)
    failed_errors = (redis.RedisError,)
    #: Lua scripts this backend registers, by file name.
    scripts: tuple[str, ...] = ()
    options: ClassVar[tuple[Option, ...]] = (CONNECT_TIMEOUT,)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client: redis.Redis | None = None
        self._scripts: dict[str, Any] = {}

    def _fresh_state(self) -> dict[str, Any]:
        return {"_client": None, "_scripts": {}}

    def client_name(self, role: str, queue: str | None = None) -> str:
        """``imq:<queue>:<role>`` for a worker's connections to ``queue``, and
        ``imq:<namespace>:<role>:<instance tag>`` for this backend's own: names by which an
        operator (or ``cut_connections``) finds one run's connections in ``CLIENT LIST``, and
        only them. (Redis refuses a name with spaces: they become ``_``.)"""
        name = f"imq:{queue}:{role}" if queue is not None else f"imq:{self.namespace}:{role}:{self.instance_tag}"
        return _NOT_IN_NAME.sub("_", name)

    def new_client(self, role: str, queue: str | None = None) -> redis.Redis:
        """A client of its own, named by ``client_name``."""
        with self.parsing_url():
            client = redis.Redis.from_url(
                self.url,
                socket_connect_timeout=self.connect_timeout_s,
                socket_timeout=SOCKET_TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),
                client_name=self.client_name(role, queue),
                redis_connect_func=self._handshake,
            )
        with self.converting("connect to", unavailable=(redis.RedisError, OSError)):  # refused credentials too
            client.ping()
        return client

    def _handshake(self, connection: Any) -> None:
        """redis-py's handshake (``CLIENT SETNAME``, ``AUTH``, ``SELECT``) under
        ``connect_timeout_s`` rather than the socket timeout of the run's commands: a server
        that accepts TCP and never answers is reported within the connect timeout. Runs on
        every (re)connection of the client's pool."""
        connection.update_current_socket_timeout(self.connect_timeout_s)
        connection.on_connect()
        connection.update_current_socket_timeout(-1)  # -1: back to the connection's socket_timeout

    def connect(self) -> None:
        if self._client is None:
            self._client = self.new_client("control")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._scripts = {}  # bound to that client: a reconnect registers them on the next

    @property
    def client(self) -> redis.Redis:
        self.connect()
        assert self._client is not None
        return self._client

    def register_scripts(self, client: redis.Redis) -> dict[str, Any]:
        """The backend's Lua scripts bound to ``client`` (sent once, then run by SHA)."""
        return {name: client.register_script(load_lua(name)) for name in self.scripts}

    def script(self, name: str) -> Any:
        if not self._scripts:
            self._scripts = self.register_scripts(self.client)
        return self._scripts[name]

    def delete_keys(self, queue: str) -> None:
        """Remove every key of ``queue`` (SCAN by its private prefix; never another run's)."""
        with self.deleting(queue):
            batch = []
            for key in self.client.scan_iter(match=keys_pattern(queue), count=500):
                batch.append(key)
                if len(batch) >= 500:
                    self.client.unlink(*batch)
                    batch.clear()
            if batch:
                self.client.unlink(*batch)

    def list_queues(self, namespace: str) -> list[str]:
        """The queues with keys on the server: SCAN for ``{<namespace>.*}:*`` (each key names
        its queue between the braces)."""
        found = set()
        with self.converting("list the keys on"):
            pattern = "{" + _GLOB_SPECIAL.sub(r"\\\1", f"{namespace}.") + "*}:*"
            for key in self.client.scan_iter(match=pattern, count=1000):
                name = key.decode() if isinstance(key, bytes) else key
                queue, sep, _ = name[1:].partition("}:")
                if sep and queue.startswith(f"{namespace}."):
                    found.add(queue)
        return sorted(found)

    def cut_connections(self, queue: str) -> int:
        """``CLIENT KILL ID`` of the clients named after ``queue``'s workers."""
        return self._kill_clients({self.client_name(role, queue) for role in WORKER_ROLES})

    def cut_control_connection(self) -> int:
        return self._kill_clients({self.client_name("control")})

    def _kill_clients(self, names: set[str]) -> int:
        """Kill the clients called one of ``names``, from a client of its own (redis-py's pool
        would otherwise hand this a second control connection)."""
        admin = self.new_client("cut")
        try:
            with self.converting("end connections on"):
                found = [c["id"] for c in admin.client_list(_type="normal") if c.get("name") in names]
                return sum(admin.client_kill_filter(_id=client, skipme=True) for client in found)
        finally:
            admin.close()

    def environment(self) -> dict[str, Any]:
        with self.converting("read the settings of"):
            info = self.client.info("server")
            config = {
                **self.client.config_get("appendonly"),
                **self.client.config_get("appendfsync"),
                **self.client.config_get("save"),
            }
        return {
            "server": "redis",
            "server_version": info.get("redis_version"),
            "url": self.describe_url(),
            "appendonly": config.get("appendonly"),
            "appendfsync": config.get("appendfsync"),
            "save": config.get("save") or "(no snapshots)",
            "durable_on_server_restart": config.get("appendonly") == "yes" or bool(config.get("save")),
        }


def send_packed(connection: Any, payload: bytes, replies: int) -> list[Any]:
    """Write commands already in the Redis protocol (``payload``) in one ``sendall`` and read
    their ``replies`` replies, on a connection held by the caller.

    For the hot paths that redis-py would otherwise pack argument by argument. A failure closes
    the connection: replies left unread would answer the next command. No retry (see above).
    """
    try:
        connection.send_packed_command([payload], check_health=False)
        return [connection.read_response() for _ in range(replies)]
    except BaseException:
        connection.disconnect()
        raise


class RedisConsumer(Consumer):
    """A consumer with its own client that gives back what it holds when it closes."""

    backend: Backend
    client: redis.Redis
    closed: bool = False

    def release(self) -> None:
        """Return the messages this consumer holds to the queue (one Lua script)."""
        raise NotImplementedError

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            with self.backend.converting("release a consumer on"):
                self.release()
        finally:
            self.client.close()


__all__ = ["RedisBase", "RedisConsumer", "key_prefix", "keys_pattern", "load_lua", "send_packed"]
