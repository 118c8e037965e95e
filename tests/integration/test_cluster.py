"""End to end: runs launched as a user launches them, executed by a real ``qcluster`` process,
served by a real daphne web server, stored in a SQLite file shared by all of them."""

from __future__ import annotations

import os
import signal

import pytest

from tests.services import wait_until
from tests.stack import Stack, descendants, wait_for_run

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One stack for the module (starting one takes seconds); each test defines its own
    experiment, and a test that kills the cluster starts a new one."""
    stack = Stack(tmp_path_factory.mktemp("stack"), web=True)
    try:
        yield stack.start()
    finally:
        stack.stop()


def define(stack: Stack, name: str, **fields) -> int:
    """Store an experiment (as the admin's add form would) and return its id."""
    values = ", ".join(f"{k}={v!r}" for k, v in {"name": name, **fields}.items())
    out = stack.manage("shell", "-c", f"from experiments.models import Experiment; "
                                      f"print(Experiment.objects.create({values}).pk)")
    return int(out.stdout.strip().splitlines()[-1])


def test_a_launched_run_executes_in_the_cluster_and_is_exact(stack):
    define(stack, "e2e-burst", backend="memory-mp", events=20_000, producers=2, consumers=2)
    out = stack.manage("launchrun", "e2e-burst", "--wait", "--json", timeout_s=180)
    (summary,) = __import__("json").loads(out.stdout)
    assert summary["status"] == "succeeded" and summary["verdict"] == "exact", stack.log("cluster")
    assert summary["sum"] == 20_000 * 20_001 // 2
    row = stack.run_row(summary["run_id"])
    assert row["executor_pid"] and row["heartbeat_at"] and row["finished_at"]
    # the run executed in a process of the cluster (its executor), which is gone now
    assert not os.path.exists(f"/proc/{row['executor_pid']}")


def test_a_killed_cluster_never_leaves_its_run_running(stack):
    define(stack, "e2e-long", backend="memory-mp", rate_eps=500.0, duration_s=120.0, warmup_s=0.0)
    out = stack.manage("launchrun", "e2e-long", "--json")
    run_id = __import__("json").loads(out.stdout)["run_ids"][0]
    wait_until(lambda: stack.query("SELECT COUNT(*) FROM experiments_sample WHERE run_id = ?", run_id)[0][0] > 0,
               60, "the run's first sample", interval_s=0.1)
    executor = stack.run_row(run_id)["executor_pid"]
    cluster = stack.procs.pop("cluster")
    os.killpg(cluster.pid, signal.SIGKILL)  # the whole cluster at once, executor included
    cluster.wait(timeout=10)
    wait_until(lambda: not os.path.exists(f"/proc/{executor}"), 10, "the executor to be gone")
    # the next look at the runs (the admin's list, launchrun --wait, the next run) finds it dead
    stack.get("/admin/experiments/run/")
    row = wait_for_run(stack, run_id, timeout_s=10, what="to be marked failed")
    assert row["status"] == "failed" and "runner process gone" in row["error"]
    stack.start_cluster()


def test_the_web_server_writes_while_a_run_samples_every_second(stack):
    """SQLite under two writers: the executor stores a sample every second and a heartbeat every
    two, while the web server handles admin writes. Nothing may fail with "database is locked"."""
    define(stack, "e2e-steady", backend="memory-mp", rate_eps=2_000.0, duration_s=6.0, warmup_s=0.0)
    out = stack.manage("launchrun", "e2e-steady", "--json")
    run_id = __import__("json").loads(out.stdout)["run_ids"][0]
    wait_until(lambda: stack.run_row(run_id).get("status") == "running", 60, "the run to start", interval_s=0.1)
    saved = 0
    while not stack.run_row(run_id).get("finished_at"):
        page = stack.submit("/admin/experiments/experiment/add/", {"name": f"written-during-run-{saved}"})
        assert "was added successfully" in page, page[:2000]
        saved += 1
    row = stack.run_row(run_id)
    assert row["status"] == "succeeded" and row["verdict"] == "exact"
    assert saved >= 3  # the writes overlapped the run's sampling
    stored = stack.query("SELECT COUNT(*) FROM experiments_experiment WHERE name LIKE 'written-during-run-%'")[0][0]
    assert stored == saved
    for name in ("web", "cluster"):
        assert "database is locked" not in stack.log(name)


def test_no_process_of_a_run_outlives_it(stack):
    define(stack, "e2e-procs", backend="memory-mp", events=5_000, producers=2, consumers=2)
    cluster = stack.procs["cluster"].pid
    before = descendants(cluster)
    stack.manage("launchrun", "e2e-procs", "--wait", timeout_s=180)
    wait_until(lambda: descendants(cluster) <= before, 10, "the run's processes to end")
