"""End to end: runs launched as a user launches them, executed by a real ``qcluster`` process,
served by a real daphne web server, stored in a SQLite file shared by all of them."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.servers import backend_url, unavailable
from tests.support.stack import define, descendants, launch, launch_from_admin, wait_for_run
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(240)


#: Polling the database from here adds up to this much to a measured time (the 0.1 s interval
#: of ``wait_for_run`` and a loaded machine's scheduling): not the run's own time to stop.
SLACK_S = 0.5


def test_a_run_launched_from_the_admin_executes_in_the_cluster_and_is_exact(stack):
    experiment = define(stack, "e2e-burst", backend="memory-mp", events=20_000, producers=2, consumers=2)
    (run_id,) = launch_from_admin(stack, experiment)
    row = wait_for_run(stack, run_id, timeout_s=120)
    assert row["status"] == "succeeded" and row["verdict"] == "exact", (row["error"], stack.log("cluster")[-3000:])
    summary = __import__("json").loads(row["summary"])
    assert summary["sum"] == summary["expected_sum"] == 20_000 * 20_001 // 2
    assert row["executor_pid"] and row["heartbeat_at"]
    # the run executed in a process of the cluster's own (its executor), which ends with it
    wait_until(lambda: not os.path.exists(f"/proc/{row['executor_pid']}"), 30, "the executor to end")
    page = stack.get(f"/admin/experiments/run/{run_id}/change/")
    assert "exact" in page and "imqTimeCharts" in stack.get("/static/experiments/charts.js")


def test_a_running_run_cancelled_from_the_admin_stops_within_2_s_and_leaves_nothing(stack):
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(backend_url("redis-list"))
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"redis-list: server not reachable: {exc}")
    experiment = define(stack, "e2e-cancel", backend="redis-list", rate_eps=1_000.0, duration_s=120.0, warmup_s=0.0)
    cluster = stack.procs["cluster"].pid
    before = descendants(cluster)
    (run_id,) = launch_from_admin(stack, experiment)
    wait_until(
        lambda: stack.query("SELECT COUNT(*) FROM experiments_sample WHERE run_id = ?", run_id)[0][0] > 0,
        60,
        "the run's first sample",
        interval_s=0.1,
    )
    queue = stack.run_row(run_id)["queue_name"]
    assert list(client.scan_iter(match="{" + queue + "}:*")), "the run's keys should exist while it runs"
    clicked = time.monotonic()
    page = stack.post(
        f"/admin/experiments/run/{run_id}/cancel/", {}, form_path=f"/admin/experiments/run/{run_id}/change/"
    )
    assert "being cancelled" in page
    row = wait_for_run(stack, run_id, timeout_s=10, what="to stop after the cancel")
    stopped_s = time.monotonic() - clicked
    assert row["status"] == "cancelled" and row["error"] == "cancelled by the user"
    assert stopped_s <= 2.0 + SLACK_S, f"the run took {stopped_s:.2f} s to stop"
    assert row["unique"] and row["unique"] > 0  # what it counted until then is stored
    wait_until(lambda: descendants(cluster) <= before, 10, "the run's processes to end")
    assert not list(client.scan_iter(match="{" + queue + "}:*")), "the run's keys were left on the server"
    client.close()


def test_a_killed_cluster_never_leaves_its_run_running(stack):
    define(stack, "e2e-long", backend="memory-mp", rate_eps=500.0, duration_s=120.0, warmup_s=0.0)
    out = stack.manage("launchrun", "e2e-long", "--json")
    run_id = __import__("json").loads(out.stdout)["run_ids"][0]
    wait_until(
        lambda: stack.query("SELECT COUNT(*) FROM experiments_sample WHERE run_id = ?", run_id)[0][0] > 0,
        60,
        "the run's first sample",
        interval_s=0.1,
    )
    executor = stack.run_row(run_id)["executor_pid"]
    cluster = stack.procs.pop("cluster")
    os.killpg(cluster.pid, signal.SIGKILL)  # the whole cluster at once, executor included
    cluster.wait(timeout=10)
    wait_until(lambda: not os.path.exists(f"/proc/{executor}"), 10, "the executor to be gone")
    # a page only shows what is stored: the admin's list leaves the dead run as it was
    stack.get("/admin/experiments/run/")
    assert stack.run_row(run_id)["status"] == "running"
    # what runs anyway finds it dead: here the restarted cluster's next task, before its own run
    stack.start_cluster()
    define(stack, "e2e-after-kill", backend="memory-mp", events=100)
    next_id = launch(stack, "e2e-after-kill")
    row = wait_for_run(stack, run_id, timeout_s=60, what="to be marked failed")
    assert row["status"] == "failed" and "runner process gone" in row["error"]
    wait_for_run(stack, next_id, timeout_s=60)


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
