"""``dev.py serve``, the control room in one command, as a user runs it: it prints a login that
opens the admin over real HTTP, and a Ctrl-C stops the cluster and the web server, cancelling the
run they execute, with no process of theirs left.

Each test runs ``python3 dev.py serve`` as a user types it (under ``dev.py test`` the venv is
installed with more extras than ``serve`` needs, so it installs nothing and becomes ``manage.py
serve``) on a database file, a metrics folder and a run lock of its own, never the developer's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from queues.workers.processes import process_alive, process_start_time
from tests.support.commands import ROOT
from tests.support.stack import Stack, define, descendants, launch
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(420)

#: Migrating a new database, then starting Django twice, on a loaded 2-core machine.
READY_S = 180
#: The stop: a run's cancel, the cluster's and daphne's exits (serve kills what is left at 60 s).
STOP_S = 120


@contextlib.contextmanager
def serving(folder: Path, *args: str) -> Iterator[tuple[subprocess.Popen, Stack, Callable[[], str]]]:
    """``dev.py serve`` on a free port, with the environment of a not-started ``Stack`` (its
    database file, its run lock) and a metrics folder of its own; its output goes to a file,
    read by the callable yielded. Stopped (SIGTERM, then SIGKILL to all it started) if a test
    left it running."""
    stack = Stack(folder)
    stack.env["IMQ_METRICS_DIR"] = str(folder / "metrics")
    stack.env.pop("DJANGO_SUPERUSER_PASSWORD")  # serve makes its own login
    output = folder / "serve.out"
    command = [sys.executable, "dev.py", "serve", "--port", str(stack.port), "--log-dir", str(folder / "logs")]
    with open(output, "w") as out:
        proc = subprocess.Popen(
            [*command, *args], cwd=ROOT, env=stack.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc, stack, lambda: output.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            left = descendants(proc.pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                for pid in left | {proc.pid}:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                proc.wait(timeout=10)


def ready(proc: subprocess.Popen, output: Callable[[], str]) -> str:
    """Wait until serve printed the dashboard's URL (it answers); its output until then."""
    wait_until(lambda: proc.poll() is not None or "\ndashboard " in output(), READY_S, "serve to open the room")
    assert proc.poll() is None, f"serve exited with status {proc.returncode}:\n{output()}"
    return output()


def processes_below(pid: int) -> dict[int, str]:
    """Every process below ``pid``, with its start time (a later process may reuse a pid)."""
    return {child: process_start_time(child) for child in descendants(pid)}


def left_alive(processes: dict[int, str]) -> list[int]:
    return [pid for pid, started in processes.items() if process_alive(pid, started)]


def command_line(pid: int) -> str:
    """The command line of ``pid``, or ``""`` if it has ended since it was listed."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])


def test_serve_prints_a_login_that_opens_the_admin_and_ctrl_c_stops_everything(tmp_path):
    with serving(tmp_path) as (proc, stack, output):
        text = ready(proc, output)
        assert stack.url("/admin/") in text and stack.url("/dashboard/") in text
        user, password = re.search(r"created the superuser (\S+) with the password (\S+) ", text).groups()
        assert "manage.py changepassword admin" in text
        page = stack.post("/admin/login/?next=/admin/", {"username": user, "password": password})
        assert "Log out" in page, page[-2000:]
        assert "Experiments" in stack.get("/admin/")
        started = processes_below(proc.pid)
        lines = [command_line(pid) for pid in started]
        assert any("qcluster" in line for line in lines) and any("daphne" in line for line in lines), lines
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=STOP_S) == 0, output()
        assert not left_alive(started), output()
        assert "no process of theirs is left" in output()
    # a second start keeps the login it made: nothing is printed that could be mistaken for a new one
    with serving(tmp_path) as (proc, stack, output):
        text = ready(proc, output)
        assert re.search(r"^login +as admin \(forgot the password\?", text, re.M) and password not in text
        assert "Log out" in stack.post("/admin/login/?next=/admin/", {"username": user, "password": password})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_S) == 0, output()


def long_run_sampling(stack: Stack, name: str) -> int:
    """A two-minute steady run launched through serve's cluster, once it stored its first sample:
    its id."""
    define(stack, name, backend="memory-mp", rate_eps=500.0, duration_s=120.0, warmup_s=0.0)
    run_id = launch(stack, name)
    wait_until(
        lambda: stack.query("SELECT COUNT(*) FROM experiments_sample WHERE run_id = ?", run_id)[0][0] > 0,
        120,
        "the run's first sample",
        interval_s=0.1,
    )
    return run_id


def test_a_run_executing_at_ctrl_c_is_stored_cancelled_and_leaves_no_process(tmp_path):
    with serving(tmp_path) as (proc, stack, output):
        ready(proc, output)
        run_id = long_run_sampling(stack, "serve-long")
        started = processes_below(proc.pid)
        assert stack.run_row(run_id)["executor_pid"] in started  # executed by serve's cluster
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=STOP_S) == 0, output()
        row = stack.run_row(run_id)
        assert (row["status"], row["error"]) == ("cancelled", "interrupted by SIGTERM"), output()
        assert row["finished_at"] and row["unique"] > 0  # what it counted until then is stored
        assert f"run {run_id} is executing: cancelling it" in output()
        assert not left_alive(started), output()


def test_when_the_web_server_dies_serve_stops_the_cluster_and_names_the_log(tmp_path):
    with serving(tmp_path) as (proc, _stack, output):
        ready(proc, output)
        started = processes_below(proc.pid)
        (web,) = [pid for pid in started if "daphne" in command_line(pid)]
        os.kill(web, signal.SIGKILL)
        assert proc.wait(timeout=STOP_S) == 1, output()
        assert f"the web server (daphne) was killed by SIGKILL; its log: {tmp_path / 'logs' / 'web.log'}" in output()
        assert not left_alive(started), output()


def test_when_the_cluster_dies_its_run_is_still_cancelled_and_nothing_of_it_is_left(tmp_path):
    with serving(tmp_path) as (proc, stack, output):
        ready(proc, output)
        run_id = long_run_sampling(stack, "serve-orphan")
        started = processes_below(proc.pid)
        (cluster,) = [pid for pid in started if "qcluster" in command_line(pid) and parent_of(pid) == proc.pid]
        os.kill(cluster, signal.SIGKILL)  # its main process only: its worker still executes the run
        assert proc.wait(timeout=STOP_S) == 1, output()
        assert "the cluster (manage.py qcluster) was killed by SIGKILL; its log:" in output()
        row = stack.run_row(run_id)
        assert (row["status"], row["error"]) == ("cancelled", "interrupted by SIGTERM"), output()
        assert not left_alive(started), output()


def test_a_port_in_use_is_refused_in_one_line_before_anything_is_written(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with serving(tmp_path, "--port", str(port)) as (proc, stack, output):
            assert proc.wait(timeout=READY_S) == 1
            assert f"port {port} on 127.0.0.1 is in use" in output() and "choose another with --port" in output()
            assert not stack.db_path.exists()  # not even migrated


def test_a_user_named_admin_who_is_no_superuser_is_left_alone_and_serve_says_what_to_do(tmp_path):
    stack = Stack(tmp_path)
    stack.manage("migrate", "-v0", check=True)
    create = "from django.contrib.auth.models import User; User.objects.create_user('admin', password='kept-as-is')"
    stack.manage("shell", "-c", create, check=True)
    users = "SELECT username, password, is_superuser FROM auth_user"
    before = stack.query(users)
    with serving(tmp_path) as (proc, stack, output):
        assert proc.wait(timeout=READY_S) == 1
        assert "the user 'admin' is not one: make one with" in output() and "createsuperuser" in output()
    assert stack.query(users) == before and len(before) == 1  # no user made, none changed


def test_dev_py_serve_sets_up_the_venv_then_becomes_manage_py_serve(monkeypatch):
    spec = importlib.util.spec_from_file_location("imqueue_dev", ROOT / "dev.py")
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    calls = []
    monkeypatch.setattr(dev, "ensure_venv", lambda extras: calls.append(("ensure_venv", extras)))
    monkeypatch.setattr(dev.os, "chdir", lambda path: calls.append(("chdir", path)))

    def execv(path, argv):
        calls.append(("execv", argv))
        raise SystemExit(0)  # where the real exec would replace the process

    monkeypatch.setattr(dev.os, "execv", execv)
    with pytest.raises(SystemExit):
        dev.main(["serve", "--port", "8123"])
    assert calls == [
        ("ensure_venv", ""),
        ("chdir", ROOT),
        ("execv", [str(ROOT / ".venv" / "bin" / "python"), "manage.py", "serve", "--port", "8123"]),
    ]
    assert "dev.py serve" in dev.__doc__
