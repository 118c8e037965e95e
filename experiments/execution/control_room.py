"""The control room as one command starts it (``manage.py serve``): a django-q2 cluster
(``manage.py qcluster``), which executes the launched runs, and a daphne web server (the admin,
the live dashboard, ``/metrics``), started together and stopped together.

Each runs in a session (and so a process group) of its own: a terminal's Ctrl-C reaches only
``serve``, which stops them in order, as ``tests/support/stack.py`` stops its stack:

1. SIGTERM to each main process. The web server exits; the cluster stops taking runs, then
   waits for the run its worker executes before it exits.
2. So that it need not wait for that run to end, each run the cluster executes is cancelled
   the way its executor (``manage.py executerun``) handles a SIGTERM: it stops the run's
   workers, removes its queue and stores the run as ``cancelled`` with what it counted
   (``execution.interrupts``). A run the cluster starts meanwhile is cancelled the same way.
3. What is left of either process group after ``STOP_TIMEOUT_S`` (or ``GROUP_GRACE_S`` after
   both main processes ended and no run executes) is killed, and the runs whose executor was
   killed are marked failed (``runs_mark_stale``): none is left ``running``.

Both also get SIGTERM if ``serve`` itself is killed (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError

from experiments.models import Run
from experiments.services.cleanup import runs_mark_stale
from queues.workers.lifeline import die_with_parent
from queues.workers.processes import group_members, kill_group

HOST = "127.0.0.1"
#: Longest a start may take until the web server answers (Django's imports on a loaded machine).
READY_TIMEOUT_S = 120.0
#: Longest the cluster may take to cancel its run and exit, and the web server to exit, before
#: what is left of them is killed. A cancelled run stops within seconds; its final counts and
#: the removal of its queue may take longer on a slow server.
STOP_TIMEOUT_S = 60.0
#: How long the other processes of a group may outlive its main one before they count as left.
GROUP_GRACE_S = 5.0
POLL_S = 0.1


class ServerFailed(Exception):
    """A server of the control room died on its own or did not answer in time."""


@dataclass
class Server:
    """One server of the control room: what it is called, its command, its log file."""

    title: str
    command: list[str]
    log: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_text(self) -> str:
        code = self.proc.returncode if self.proc else None
        if code is not None and code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"


@dataclass
class Stopped:
    """How a stop went: the servers whose processes had to be killed (none: both stopped on
    their own) and the runs then marked failed because their executor was killed."""

    killed: list[Server]
    failed_runs: list[int]


def port_taken(port: int) -> bool:
    """Whether something listens on ``HOST:port`` already (a server binding it would fail)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no obstacle
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
    return False


class ControlRoom:
    """``start()``, ``wait_for_web()``, ``watch()``, then ``stop()`` (or ``kill()`` at once)."""

    def __init__(self, *, port: int, log_dir: Path) -> None:
        self.port = port
        manage = str(settings.BASE_DIR / "manage.py")
        self.cluster = Server(
            "the cluster (manage.py qcluster)", [sys.executable, manage, "qcluster"], log_dir / "cluster.log"
        )
        self.web = Server(
            "the web server (daphne)",
            [sys.executable, "-m", "daphne", "-b", HOST, "-p", str(port), "imqueue_site.asgi:application"],
            log_dir / "web.log",
        )
        self.servers = (self.cluster, self.web)

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def start(self) -> None:
        """Start the cluster, then the web server (as the tests' stack does), each logging to its
        own file, emptied first."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")  # a log line is written when it happens
        for server in self.servers:
            server.log.parent.mkdir(parents=True, exist_ok=True)
            with open(server.log, "w") as log:  # the child keeps its own copy of the descriptor
                server.proc = subprocess.Popen(
                    server.command,
                    cwd=settings.BASE_DIR,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_parent,  # noqa: PLW1509 - only sets a flag of the kernel's
                )

    def web_answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("/admin/login/"), timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def died(self) -> Server | None:
        """A server whose process has ended, if any."""
        return next((server for server in self.servers if server.proc and not server.alive()), None)

    def wait_for_web(self, *, interrupted: Callable[[], object]) -> bool:
        """Wait until the web server answers (True) or ``interrupted()`` is true (False); raise
        ``ServerFailed`` if a server dies first or the web server does not answer in time."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.web_answers():
            if interrupted():
                return False
            self._raise_if_died()
            if time.monotonic() > deadline:
                raise ServerFailed(
                    f"{self.web.title} did not answer within {READY_TIMEOUT_S:g} s; its log: {self.web.log}"
                )
            time.sleep(POLL_S * 2)
        return True

    def watch(self, *, interrupted: Callable[[], object]) -> None:
        """Return once ``interrupted()`` is true; raise ``ServerFailed`` if a server dies first."""
        while not interrupted():
            self._raise_if_died()
            time.sleep(POLL_S * 2)

    def _raise_if_died(self) -> None:
        if dead := self.died():
            raise ServerFailed(f"{dead.title} {dead.exit_text()}; its log: {dead.log}")

    def stop(self, *, on_cancel: Callable[[int, int], None] = lambda run_id, pid: None) -> Stopped:
        """Stop both in order (the module's docstring), calling ``on_cancel(run_id, pid)`` for each
        run cancelled."""
        for server in self.servers:
            if server.alive():
                server.proc.send_signal(signal.SIGTERM)
        cancelled: set[int] = set()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            # the cluster's group, not only its main process: a cluster that died on its own may
            # leave its worker executing a run, which is cancelled the same way
            group = group_members(self.cluster.proc.pid) if self.cluster.proc else []
            executing = _runs_executing(pids=group)
            for run_id, pid in executing:
                if pid not in cancelled:
                    cancelled.add(pid)
                    with contextlib.suppress(ProcessLookupError):  # it has just ended on its own
                        os.kill(pid, signal.SIGTERM)
                    on_cancel(run_id, pid)
            if not executing and not any(server.alive() for server in self.servers):
                break
            time.sleep(POLL_S)
        return self._end_groups(grace_s=GROUP_GRACE_S)

    def kill(self) -> Stopped:
        """Kill both process groups now (a second Ctrl-C); their runs are marked failed."""
        return self._end_groups(grace_s=0)

    def _end_groups(self, *, grace_s: float) -> Stopped:
        """Kill what is left of each server's process group once ``grace_s`` has passed, reap
        the main processes, and mark failed the runs whose executor was killed."""
        deadline = time.monotonic() + grace_s
        started = [server for server in self.servers if server.proc]
        while time.monotonic() < deadline and any(group_members(server.proc.pid) for server in started):
            time.sleep(POLL_S)
        killed = [server for server in started if group_members(server.proc.pid)]
        for server in killed:
            kill_group(server.proc.pid)
        for server in started:
            server.proc.wait()
        try:
            failed_runs = runs_mark_stale() if killed else []
        except DatabaseError:  # the next cluster's task marks them: the servers are stopped anyway
            failed_runs = []
        return Stopped(killed=killed, failed_runs=failed_runs)


def _runs_executing(*, pids: list[int]) -> list[tuple[int, int]]:
    """(run id, executor pid) of the runs executing on this machine in one of ``pids``."""
    if not pids:
        return []
    running = Run.objects.filter(status=Run.Status.RUNNING, executor_host=socket.gethostname(), executor_pid__in=pids)
    try:
        return list(running.values_list("pk", "executor_pid"))
    except DatabaseError:  # asked again at the next poll: a database that is down must not block the stop
        return []
