"""Private servers (``queues.faults.servers``): they start, crash and come back on the same port and
data, keep exactly what their persistence keeps, leave nothing behind on ``close``, and die with
the process that started them even when it is SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid

import pytest

from queues.backends import backend_class
from queues.errors import BackendUnavailable, NotSupported, UnknownBackend
from queues.faults import servers
from queues.faults.servers import group_members, private_server, private_server_kinds, stale_private_servers_cleanup
from tests.support.messages import bodies
from tests.support.servers import unavailable
from tests.support.waiting import wait_until

KINDS = [
    (alias, persistence)
    for alias in ("redis-list", "postgres", "mysql")
    for persistence in private_server_kinds()[alias]
]


def started(alias: str, persistence: str | None = None) -> servers.PrivateServer:
    """A started private server, or skip/fail (CI) where its programs are not installed."""
    try:
        server = private_server(alias, persistence=persistence)
    except NotSupported as exc:
        unavailable(str(exc))
    server.start()
    return server


@pytest.mark.parametrize("alias, persistence", KINDS)
def test_a_queue_survives_a_restart_exactly_when_the_server_is_durable(alias, persistence):
    with started(alias, persistence) as server:
        directory, port, first_pid = server.dir, server.port, server.process.pid
        backend = backend_class(alias)(url=server.url, namespace=f"imqtest-{uuid.uuid4().hex[:10]}")
        queue = f"{backend.namespace}.q"
        backend.declare(queue)
        producer = backend.producer(queue)
        producer.send_batch(bodies(3))
        producer.close()

        unreachable_s = server.restart()

        assert 0 < unreachable_s < servers.START_TIMEOUT_S
        assert (server.port, server.dir) == (port, directory) and server.process.pid != first_pid
        assert not group_members(first_pid)  # the crashed server's processes are all gone
        depth = backend.reconnecting(backend.depth, queue)  # its control connection died with the server
        assert depth == (3 if server.durable else 0), server
        backend.close()
    assert not os.path.exists(directory) and not group_members(server.process.pid if server.process else first_pid)


def test_close_removes_the_directory_and_the_process_and_is_idempotent():
    server = started("redis-stream")
    directory, pid = server.dir, server.process.pid
    server.close()
    assert not os.path.exists(directory) and not group_members(pid)
    server.close()  # again: nothing left to do, nothing raised
    assert server.dir is None


@pytest.mark.parametrize("alias", ["redis-list", "postgres", "mysql"])
def test_a_server_bound_to_more_addresses_serves_the_backend_at_each(alias):
    """127.0.0.2 stands for the root end of a veth pair: any 127/8 address is local here."""
    try:
        server = private_server(alias, bind=["127.0.0.1", "127.0.0.2"])
    except NotSupported as exc:
        unavailable(str(exc))
    with server:
        assert server.url == server.url_on("127.0.0.1") != server.url_on("127.0.0.2")
        for address in server.bind:
            backend = backend_class(alias)(url=server.url_on(address), namespace=f"imqtest-{uuid.uuid4().hex[:10]}")
            queue = f"{backend.namespace}.q"
            backend.declare(queue)
            producer = backend.producer(queue)
            producer.send_batch(bodies(2))
            producer.close()
            assert backend.depth(queue) == 2, address
            backend.delete(queue)
            backend.close()


def test_a_server_listens_on_127_0_0_1_alone_by_default():
    with started("redis-list") as server:
        assert server.bind == ("127.0.0.1",) and server.url == f"redis://127.0.0.1:{server.port}/0"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", server.port), timeout=2).close()


def test_bind_takes_ip_addresses_and_urls_name_only_those():
    server = private_server("redis-list", bind=["::1", "10.213.0.1", "0:0::1"])
    assert server.bind == ("::1", "10.213.0.1")  # normalised, each once
    assert server.url_on("::1") == "redis://[::1]:0/0" and server.url_on("10.213.0.1") == "redis://10.213.0.1:0/0"
    with pytest.raises(ValueError, match="does not listen on 10.213.0.2"):
        server.url_on("10.213.0.2")
    for wrong in ([], "127.0.0.1", ["localhost"]):
        with pytest.raises(ValueError):
            private_server("redis-list", bind=wrong)


def test_redis_drops_its_protected_mode_only_when_bound_off_loopback():
    """Protected mode refuses every client off loopback without a password: a server bound to a
    veth end must accept the namespace's clients, and one on loopback keeps the default."""

    def protected(bind: list[str]) -> str:
        command = private_server("redis-list", bind=bind).command()
        return command[command.index("--protected-mode") + 1]

    assert protected(["127.0.0.1"]) == protected(["127.0.0.1", "::1"]) == "yes"
    assert protected(["127.0.0.1", "10.213.0.1"]) == "no"


def test_a_server_killed_behind_its_back_is_closed_quietly():
    server = started("redis-list", "aof-always")
    os.killpg(server.process.pid, signal.SIGKILL)
    server.close()
    assert server.dir is None


OWNER = """
import json, sys
from queues.faults.servers import private_server
for alias in sys.argv[1:]:
    server = private_server(alias)
    server.start()
    print(json.dumps({"dir": server.dir, "pid": server.process.pid}), flush=True)
sys.stdin.read()  # until killed
"""


def test_servers_die_with_a_sigkilled_owner_and_cleanup_removes_their_directories():
    """Postgres runs as another user here (root): the death signal must survive that switch."""
    for alias in ("redis-list", "postgres"):
        try:
            private_server(alias)
        except NotSupported as exc:
            unavailable(str(exc))
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, "redis-list", "postgres"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        made = [json.loads(owner.stdout.readline() or "{}") for _ in range(2)]
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()
        owner.stdin.close()
    assert all("dir" in m for m in made), made
    wait_until(lambda: not any(group_members(m["pid"]) for m in made), 10, "the owner's servers to die with it")
    assert all(os.path.isdir(m["dir"]) for m in made)  # nobody closed them: cleanup's work
    removed = stale_private_servers_cleanup()
    assert {m["dir"] for m in made} <= set(removed)
    assert not any(os.path.exists(m["dir"]) for m in made)


def test_a_taken_port_is_replaced_on_the_first_start(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        # bound, not listening: the server cannot bind it, and a probe is refused at once
        busy = taken.getsockname()[1]
        ports = iter([busy, busy])
        monkeypatch.setattr(servers, "free_port", lambda *_: next(ports, 0) or socket_free_port())
        with started("redis-list") as server:
            assert server.port != busy


def socket_free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_server_that_cannot_start_says_why_from_its_log(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        # bound, not listening: the server cannot bind it, and a probe is refused at once
        monkeypatch.setattr(servers, "free_port", lambda *_: taken.getsockname()[1])
        try:
            server = private_server("redis-list")
        except NotSupported as exc:
            unavailable(str(exc))
        with pytest.raises(
            BackendUnavailable, match=f"^private redis server exited at start: .*port {taken.getsockname()[1]}"
        ) as failed:
            server.start()
        assert "\n" not in str(failed.value)
        assert server.dir is None and not server.running  # a failed first start leaves nothing


@pytest.mark.parametrize(
    "alias, error, words",
    [
        ("memory", NotSupported, "memory has no private server to restart; restart-server takes: mysql, postgres"),
        ("memroy-mp", UnknownBackend, "did you mean 'memory-mp'"),
    ],
)
def test_an_alias_without_a_private_server_is_one_line(alias, error, words):
    with pytest.raises(error) as refused:
        private_server(alias)
    assert words in str(refused.value) and "\n" not in str(refused.value)


def test_a_persistence_the_kind_has_not_is_one_line():
    with pytest.raises(
        NotSupported, match=r"^a private redis server has no persistence 'fsync'; choose one of: none, aof-always$"
    ):
        private_server("redis-stream", persistence="fsync")


@pytest.mark.parametrize("alias, program", [("redis-list", "redis-server"), ("mysql", "mariadb-install-db")])
def test_a_missing_program_is_named_with_how_to_install_it(alias, program, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # both are in /usr/bin, which find_binary searches only on PATH
    with pytest.raises(
        NotSupported, match=rf"^a private server needs {program}, which is not installed here: install "
    ) as missing:
        private_server(alias)
    assert "apt-get install" in str(missing.value) and "\n" not in str(missing.value)


def test_the_aliases_that_take_restart_server_and_their_persistence():
    kinds = private_server_kinds()
    assert kinds["redis-list"] == kinds["redis-stream"] == ("none", "aof-always")
    assert kinds["postgres"] == kinds["postgres-notify"] == ("fsync",)
    assert "memory" not in kinds and "rabbitmq" not in kinds
