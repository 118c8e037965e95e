"""restart-server: the run's own private server crashes and restarts mid-run (never a shared
server). What survives is what its persistence keeps, and the verdict says so: Redis without
persistence loses the queue (a durability finding, not a delivery failure); with AOF
``appendfsync always``, Postgres and MariaDB with fsync, nothing acked is lost.

Both consumers are paused around the restart, so that the queue holds a backlog when it comes.
"""

from __future__ import annotations

import os
import uuid

import pytest

from queues.errors import NotSupported
from queues.faults.servers import owner_pid, private_server, private_server_dirs
from queues.run.launch import run_spec
from queues.run.result import RunStatus
from queues.workload.spec import WorkloadSpec
from tests.support.servers import unavailable

FAULTS = ("pause-consumer@0.5:2:0", "pause-consumer@0.5:2:1")
RUN = {"rate_eps": 1_000, "duration_s": 4, "consumers": 2, "batch": 100, "idle_timeout_s": 2, "replace_after_s": 0.3}


@pytest.mark.parametrize(
    ("alias", "persistence", "durable"),
    [
        ("redis-list", "none", False),
        ("redis-list", "aof-always", True),
        ("redis-list-noack", "none", False),
        ("redis-stream", "none", False),
        ("redis-stream", "aof-always", True),
        ("postgres", None, True),
        ("postgres-notify", None, True),
        ("mysql", None, True),
    ],
)
def test_a_restarted_private_server_keeps_exactly_what_its_persistence_keeps(alias, persistence, durable):
    try:
        private_server(alias, persistence=persistence)  # finds its programs; starts nothing
    except NotSupported as exc:
        unavailable(str(exc))
    restart = "restart-server@1.5" + (f":{persistence}" if persistence else "")
    spec = WorkloadSpec(backend=alias, faults=(*FAULTS, restart), **RUN)
    result = run_spec(spec, run_id=uuid.uuid4().hex[:8])
    s = result.summary
    assert result.status == RunStatus.SUCCEEDED, f"{result.status}: {result.error}"
    [fault] = [f for f in s["faults"] if f["kind"] == "restart-server"]
    assert fault["outcome"].startswith("crashed (SIGKILL) and back in "), fault
    assert result.environment["private_server"]["durable"] is durable
    assert s["contradictions"] == []
    if durable:
        assert s["lost"] == 0 and s["unique_sum"] == spec.expected_sum, s
    else:  # the backlog the paused consumers left went with the server, and the verdict says so
        assert s["lost"] > 0 and s["verdict"] == "lost"
        assert any("restarted without persistence" in finding for finding in s["findings"]), s["findings"]
    # the server and its directory are gone (others', of concurrent runs on this machine, may not be)
    assert [d for d in private_server_dirs() if owner_pid(d) == os.getpid()] == []
