"""Interrupts and killed runners: SIGINT and SIGTERM cancel a real ``runexperiment`` cleanly,
the workers of a SIGKILLed runner die with it, and ``cleanup`` removes what it left."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from queues.errors import BackendUnavailable
from queues.run.launch import build_backend
from tests.support.servers import unavailable
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
# A steady run long enough to be interrupted whatever the machine's load.
STEADY = ("--rate", "2000", "--duration", "120", "--consumers", "2", "--json")


def server(alias):
    """The backend ``alias`` connected to its server (skip, or fail in CI, if it is down)."""
    backend = build_backend(alias)
    try:
        backend.connect()
    except BackendUnavailable as exc:
        unavailable(f"{alias}: server not reachable: {exc}")
    return backend


def start(env, *args):
    """``runexperiment`` in a session (and process group) of its own, as a terminal would run it."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "runexperiment", *args],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_row(path, experiment):
    """(pk, status, error, queue_name, consumed so far) of the experiment's run, or None."""
    with sqlite3.connect(path, timeout=10) as db:
        return db.execute(
            "SELECT r.id, r.status, r.error, r.queue_name,"
            " (SELECT max(s.consumed) FROM experiments_sample s WHERE s.run_id = r.id)"
            " FROM experiments_run r JOIN experiments_experiment e ON e.id = r.experiment_id WHERE e.name = ?",
            (experiment,),
        ).fetchone()


def counting(path, experiment):
    """The run's row once it is running and its samples show events consumed."""
    row = run_row(path, experiment)
    return row if row and row[1] == "running" and (row[4] or 0) > 0 else None


def group_members(pgid):
    """Live (not zombie) processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(
    "alias,signum,to_group,status",
    [
        ("memory-mp", signal.SIGINT, True, 130),  # a terminal's Ctrl-C: the workers get it too
        ("memory-mp", signal.SIGTERM, False, 143),
        ("postgres", signal.SIGINT, False, 130),
        ("redis-list", signal.SIGTERM, False, 143),
    ],
)
def test_an_interrupt_cancels_the_run_with_its_counts_and_leaves_nothing(
    cli_db, cli_db_path, alias, signum, to_group, status
):
    env, path = cli_db, cli_db_path
    backend = server(alias) if alias != "memory-mp" else None
    experiment = f"interrupt-{alias}-{signum}-{to_group}"
    proc = start(env, "--backend", alias, "--experiment", experiment, *STEADY)
    try:
        pk, *_ = wait_until(lambda: counting(path, experiment), 90, "the run to count events")
        wait_until(lambda: len(group_members(proc.pid)) >= 4, 30, "the runner and its three workers")
        if to_group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, err
    assert "Traceback" not in err
    summary = json.loads(out)  # the whole of stdout is one JSON object
    name = signal.Signals(signum).name
    assert summary["status"] == "cancelled" and summary["error"] == f"interrupted by {name}"
    assert summary["run_id"] == pk and summary["received"] > 0 and summary["unique"] > 0
    _, row_status, row_error, queue, _ = run_row(path, experiment)
    assert (row_status, row_error) == ("cancelled", f"interrupted by {name}")
    wait_until(lambda: not group_members(proc.pid), 10, "no process of the command's group left")
    if backend is not None:
        assert queue.startswith("imq.") and not backend.queue_exists(queue)
        backend.close()


def test_the_workers_of_a_killed_runner_die_and_cleanup_removes_what_it_left(cli_db, cli_db_path):
    env, path = cli_db, cli_db_path
    backend = server("postgres")
    experiment = "killed-runner"
    proc = start(env, "--backend", "postgres", "--experiment", experiment, *STEADY)
    try:
        pk, _, _, queue, _ = wait_until(lambda: counting(path, experiment), 90, "the run to count events")
        workers = wait_until(
            lambda: (m := [p for p in group_members(proc.pid) if p != proc.pid]) and len(m) >= 3 and m,
            30,
            "the three workers",
        )
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_until(lambda: not any(alive(p) for p in workers), 10, "the workers of the killed runner to exit")
    assert run_row(path, experiment)[1] == "running"  # nobody stored its end
    assert backend.queue_exists(queue)  # its table is still on the server

    dry = subprocess.run(
        [sys.executable, "manage.py", "cleanup", "--dry-run", "--backend", "postgres"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    assert f"run {pk}: would mark failed" in dry.stdout and f"would remove {queue}" in dry.stdout
    assert run_row(path, experiment)[1] == "running" and backend.queue_exists(queue)

    out = subprocess.run(
        [sys.executable, "manage.py", "cleanup", "--backend", "postgres"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"postgres: remove {queue} (run {pk})" in out.stdout
    _, status, error, _, _ = run_row(path, experiment)
    assert (status, error) == ("failed", "runner process gone: found by cleanup")
    assert not backend.queue_exists(queue)
    backend.close()


@pytest.mark.django_db
def test_an_interrupt_stops_a_repeat_series_after_the_run_it_cancels():
    from experiments.services.series import series_repeat
    from queues.workload.spec import WorkloadSpec

    calls = []

    def interrupted():  # the signal arrives while the first run executes
        calls.append(1)
        return "interrupted by SIGINT" if len(calls) > 3 else None

    spec = WorkloadSpec.from_mapping({"backend": "memory-mp", "rate_eps": 1000, "duration_s": 60})
    series = series_repeat(spec=spec, experiment_name="repeat-interrupted", repeat=3, interrupted=interrupted)
    runs = list(series.runs.order_by("pk"))
    assert series.status == "cancelled" and len(runs) == 1
    assert (runs[0].status, runs[0].error) == ("cancelled", "interrupted by SIGINT")
    assert runs[0].summary["status"] == "cancelled" and "received" in runs[0].summary  # stored with its counts


@pytest.mark.parametrize("approach", ["loop", "asyncio", "futures", "reactive"])
def test_an_in_process_approach_can_be_cancelled(approach):
    from queues.run.launch import run_spec
    from queues.workload.spec import WorkloadSpec

    spec = WorkloadSpec.from_mapping({"backend": approach, "events": 2_000_000})
    result = run_spec(spec, run_id="cancel", should_cancel=lambda: True)
    assert result.status == "cancelled"
    assert 0 < result.ledger.unique < spec.events


@pytest.mark.django_db
@pytest.mark.parametrize("approach", ["loop", "asyncio"])
def test_run_execute_of_an_approach_completes_and_an_interrupt_cancels_it(approach):
    from experiments.services.runs import run_execute, run_prepare
    from queues.workload.spec import WorkloadSpec

    spec = WorkloadSpec.from_mapping({"backend": approach, "events": 20_000})
    done = run_execute(run=run_prepare(spec=spec, experiment_name="approach"))
    assert done.status == "succeeded" and done.unique == 20_000
    big = WorkloadSpec.from_mapping({"backend": approach, "events": 2_000_000})
    run = run_prepare(spec=big, experiment_name="approach")
    calls = []

    def interrupted():  # arrives once the run is under way
        calls.append(1)
        return "interrupted by SIGTERM" if len(calls) > 2 else None

    run = run_execute(run=run, interrupted=interrupted)
    assert (run.status, run.error) == ("cancelled", "interrupted by SIGTERM")
    assert 0 < run.unique < big.events
