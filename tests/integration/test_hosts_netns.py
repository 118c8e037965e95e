"""Load hosts in network namespaces of their own: each host's ``qcluster`` (and the workers its
shares fork) runs under ``ip netns exec``, joined to the root namespace by a veth pair with an
address of its own, so that its traffic can only be what it sends over its pair. The coordinator
stays in the root namespace. Django needs no network (one SQLite file, django-q2's ORM broker on
it); the queue is a private Redis listening on 127.0.0.1 and on the root end of every pair."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from queues.errors import NotSupported
from queues.faults.servers import private_server
from tests.support import netns
from tests.support.servers import unavailable
from tests.support.stack import FAST, Stack, define, launch, running, wait_for_run
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

HOSTS = "abc"


@pytest.fixture
def namespaces():
    if reason := netns.unavailable_reason():
        unavailable(f"load hosts in network namespaces: {reason}")
    with netns.Namespaces(HOSTS) as made:
        yield made.pairs


@pytest.fixture
def redis_server(namespaces):
    pytest.importorskip("redis")
    try:
        server = private_server("redis-list", bind=["127.0.0.1", *(p.root_address for p in namespaces.values())])
    except NotSupported as exc:
        unavailable(str(exc))
    with server:
        yield server


@pytest.fixture
def stack(tmp_path, namespaces, redis_server):
    """A stack of the test's own: its namespaces and its private Redis are the test's own too."""
    stack = Stack(tmp_path, web=False)
    stack.env.update(FAST, IMQ_REDIS_URL=redis_server.url)  # the coordinator's, on loopback
    hosts = {
        name: {"prefix": pair.prefix, "IMQ_REDIS_URL": redis_server.url_on(pair.root_address)}
        for name, pair in namespaces.items()
    }
    # stopped at the end before the namespaces go: a namespace with a process in it outlives its name
    with running(stack, hosts=hosts, what="the hosts in their namespaces to answer") as started:
        yield started


def reaches(pair: netns.Pair, url: str) -> bool:
    """Whether a client in ``pair``'s namespace gets an answer from the Redis at ``url``."""
    ping = "import redis, sys; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=2).ping()"
    return (
        subprocess.run([*pair.prefix, sys.executable, "-c", ping, url], capture_output=True, timeout=30).returncode == 0
    )


def test_a_run_over_hosts_in_their_own_namespaces_is_exact_and_each_connects_from_its_address(
    stack, namespaces, redis_server
):
    a, b, c = (namespaces[name] for name in HOSTS)
    assert reaches(a, redis_server.url_on(a.root_address))
    assert not reaches(a, redis_server.url)  # the root namespace's loopback is not the host's
    define(
        stack,
        "netns-3",
        backend="redis-list",
        rate_eps=2_000.0,
        duration_s=3.0,
        warmup_s=0.0,
        producers=1,
        consumers=2,
        placement={"producers": {"a": 1}, "consumers": {"b": 1, "c": 1}},
    )
    run_id = launch(stack, "netns-3")
    queue = wait_until(lambda: stack.run_row(run_id).get("queue_name"), 30, "the run's queue name", interval_s=0.05)
    client = __import__("redis").Redis.from_url(redis_server.url)
    seen: dict[str, set[str]] = {}

    def workers_seen() -> bool:
        """Where the run's worker connections come from (``imq:<queue>:<role>``), until each
        host's are there: its workers connect before the start barrier and stay for the 3 s
        run, while the coordinator's own drain consumer connects only after the run."""
        for connection in client.client_list():
            if (name := connection["name"]).startswith(f"imq:{queue}:"):
                seen.setdefault(name.rpartition(":")[2], set()).add(connection["addr"].rpartition(":")[0])
        return bool(seen.get("producer")) and len(seen.get("consumer", ())) >= 2

    try:
        wait_until(workers_seen, 60, "the hosts' workers to connect", interval_s=0.05)
    finally:
        client.close()
    assert seen == {"producer": {a.address}, "consumer": {b.address, c.address}}, seen

    row = wait_for_run(stack, run_id, timeout_s=60)
    assert row["status"] == "succeeded" and row["verdict"] == "exact", (row["error"], stack.log("host-b")[-2000:])
    summary = json.loads(row["summary"])
    assert summary["unique"] == summary["events"] == 6_000 and summary["sum"] == summary["expected_sum"]
    assert set(summary["hosts"]) == set(HOSTS)


def test_namespaces_go_with_their_pairs_and_processes_and_the_session_finds_those_left_open():
    if reason := netns.unavailable_reason():
        unavailable(f"network namespaces: {reason}")
    made = netns.Namespaces("xy").__enter__()  # as a test that never closes them
    x, y = made.pairs["x"], made.pairs["y"]
    assert x.root_address != y.root_address and x.address.rpartition(".")[0] == x.root_address.rpartition(".")[0]
    sleeper = subprocess.Popen([*x.prefix, "sleep", "60"])
    try:
        # `ip netns exec` enters the namespace a moment after it starts (longer on a busy machine)
        wait_until(
            lambda: str(sleeper.pid) in netns.ip("netns", "pids", x.namespace, check=False).stdout.split(),
            10,
            "the sleeper inside its namespace",
        )
        assert netns.leftovers() == sorted([x.namespace, y.namespace])
        assert netns.leftovers_remove() == sorted([x.namespace, y.namespace])  # what the session's end calls
        assert sleeper.wait(timeout=10) == -9  # killed: a process would keep the namespace and its pair alive
    finally:
        made.close()  # idempotent: nothing left to do when the cleanup worked
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
    assert not netns.leftovers() and not any(netns.namespace_exists(p.namespace) for p in (x, y))
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    assert x.veth not in links and y.veth not in links
