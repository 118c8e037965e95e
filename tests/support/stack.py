"""The product as a user runs it, for end-to-end tests: a SQLite database file of its own, a
``qcluster`` and a daphne web server as separate processes, and a logged-in staff session over
real HTTP. Nothing is mocked; every process is stopped at the end and checked gone.

``running()`` starts a stack (and its load hosts) and stops it, whatever happens: the one way the
``stack`` fixtures (``tests/integration/conftest.py``) make one. ``define``, ``launch_from_admin``
and ``launch`` store and launch experiments on it as a user does.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

from tests.support.commands import PASSWORD, ROOT, manage, migrated_database
from tests.support.waiting import wait_until

#: Load hosts that beat, are judged alive and join a run fast (the distributed tests).
#: Hosts beat often and are found dead soon. Their shares may take a while to join on a loaded
#: machine (each starts Django and forks its workers while the suite's other workers run): the join
#: timeout is no figure a test checks, only what a run waits before failing.
FAST = {"IMQ_HOST_BEAT_S": "0.5", "IMQ_HOST_ALIVE_S": "3", "IMQ_HOST_JOIN_TIMEOUT_S": "60"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, from ``/proc`` (children of children too)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


class Stack:
    """Start with ``start()``; ``stop()`` ends every process it started."""

    def __init__(self, folder: Path, *, web: bool = True) -> None:
        self.folder, self.web = folder, web
        self.db_path = folder / "stack.sqlite3"
        self.port = free_port()
        self.env = dict(
            os.environ,
            DATABASE_URL=f"sqlite:///{self.db_path}",
            IMQ_RUN_LOCK_PATH=str(folder / "runs.lock"),
            DJANGO_SUPERUSER_PASSWORD=PASSWORD,
            PYTHONPATH=str(ROOT),
            PYTHONUNBUFFERED="1",
        )
        self.procs: dict[str, subprocess.Popen] = {}
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    # -- processes ---------------------------------------------------------------------------
    def manage(self, *args: str, check: bool = True, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return manage(self.env, *args, timeout=timeout_s, check=check)

    def start(self) -> Stack:
        migrated_database(self.db_path)
        self.start_cluster()
        if self.web:
            self.procs["web"] = self._spawn(
                "web",
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "imqueue_site.asgi:application",
                ],
            )
            wait_until(self._web_answers, 60, "the web server to answer")
            self.login()
        return self

    def start_cluster(self) -> None:
        self.procs["cluster"] = self._spawn("cluster", [sys.executable, "manage.py", "qcluster"])

    def start_host(self, name: str, *, prefix: list[str] | None = None, **env: str) -> subprocess.Popen:
        """A load host: a ``qcluster`` of its own named ``name`` (``IMQ_HOST_NAME``), with ``env``
        added, run under ``prefix`` if given (``ip netns exec NS``); its log is ``host-<name>``."""
        command = [*(prefix or []), sys.executable, "manage.py", "qcluster"]
        proc = self._spawn(f"host-{name}", command, {"IMQ_HOST_NAME": name, **env})
        self.procs[f"host-{name}"] = proc
        return proc

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "a")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to each server's main process (as ``docker stop`` does: a qcluster stops its
        own processes in order, while one whose every process got SIGTERM at once can hang),
        then SIGKILL to the process group of any left after 20 s."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    # -- the database, read as the processes wrote it ----------------------------------------
    def query(self, sql: str, *params) -> list[tuple]:
        with sqlite3.connect(self.db_path, timeout=30) as conn:
            return conn.execute(sql, params).fetchall()

    def run_row(self, run_id: int) -> dict:
        with sqlite3.connect(self.db_path, timeout=30) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM experiments_run WHERE id = ?", (run_id,)).fetchone()
        return dict(row) if row else {}

    # -- HTTP as a logged-in staff user --------------------------------------------------------
    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _web_answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("/admin/login/"), timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def get(self, path: str) -> str:
        with self.opener.open(self.url(path), timeout=30) as response:
            return response.read().decode()

    def post(self, path: str, data: dict | list[tuple[str, str]], *, form_path: str | None = None) -> str:
        """POST ``data`` with the CSRF token of the page at ``form_path`` (``path`` by default),
        as a browser submitting that page's form would."""
        page = self.get(form_path or path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, f"no CSRF token on {form_path or path}"
        items = list(data.items()) if isinstance(data, dict) else list(data)
        body = urllib.parse.urlencode([*items, ("csrfmiddlewaretoken", token.group(1))]).encode()
        request = urllib.request.Request(self.url(path), data=body, headers={"Referer": self.url(form_path or path)})
        with self.opener.open(request, timeout=30) as response:
            return response.read().decode()

    def submit(self, path: str, overrides: dict[str, str], *, submit: str | None = None) -> str:
        """Submit the form on the page at ``path`` as a browser would: every field with the value
        the page gives it, then ``overrides`` (and the button named ``submit``)."""
        fields = FormFields()
        fields.feed(self.get(path))
        values = {**fields.values, **overrides}
        if submit:
            values[submit] = fields.buttons.get(submit, submit)
        values.pop("csrfmiddlewaretoken", None)
        return self.post(path, values)

    def login(self) -> None:
        page = self.post("/admin/login/?next=/admin/", {"username": "staff", "password": PASSWORD})
        assert "Log out" in page or "logout" in page, "staff login failed"


class FormFields(HTMLParser):
    """The named inputs, selects (their selected option, else the first) and textareas of a
    page's forms, as a browser would submit them; buttons apart."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.buttons: dict[str, str] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind == "submit":
                self.buttons[name] = a.get("value", "")
            elif kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.values[name] = a.get("value", "on")
            else:
                self.values[name] = a.get("value") or ""
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select:
            if "selected" in a or self._select not in self.values:
                self.values[self._select] = a.get("value", "")
        elif tag == "textarea" and name:
            self._textarea = name
            self.values[name] = ""

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.values[self._textarea] += data.lstrip("\n") if not self.values[self._textarea] else data


def wait_for_run(stack: Stack, run_id: int, *, timeout_s: float, what: str = "the run to end") -> dict:
    return wait_until(
        lambda: (row := stack.run_row(run_id)).get("finished_at") and row,
        timeout_s,
        f"run {run_id}: {what}",
        interval_s=0.1,
    )


@contextlib.contextmanager
def running(
    stack: Stack, *, start: bool = True, hosts: dict[str, dict] | None = None, what: str = "the hosts to answer"
) -> Iterator[Stack]:
    """``stack`` started (with ``start`` false: only its database migrated), then a load host
    for each name of ``hosts`` (its value: ``start_host``'s keywords) and, if any, until every
    one of them answered; stopped at the end, whatever happened."""
    try:
        if start:
            stack.start()
        else:
            migrated_database(stack.db_path)
        for name, options in (hosts or {}).items():
            stack.start_host(name, **options)
        if hosts:
            wait_until(
                lambda: (
                    len(stack.query("SELECT name FROM experiments_host WHERE clock_offset_s IS NOT NULL")) == len(hosts)
                ),
                60,
                what,
                interval_s=0.1,
            )
        yield stack
    finally:
        stack.stop()


def define(stack: Stack, name: str, **fields) -> int:
    """Store an experiment (as the admin's add form would) and return its id."""
    values = ", ".join(f"{k}={v!r}" for k, v in {"name": name, **fields}.items())
    out = stack.manage(
        "shell", "-c", f"from experiments.models import Experiment; print(Experiment.objects.create({values}).pk)"
    )
    return int(out.stdout.strip().splitlines()[-1])


def launch_from_admin(stack: Stack, experiment_id: int, *, repeat: int = 1) -> list[int]:
    """Select the experiment in the admin's list, choose Launch, confirm with ``repeat``: the
    ids of the runs it queued."""
    before = {r[0] for r in stack.query("SELECT id FROM experiments_run WHERE experiment_id = ?", experiment_id)}
    page = stack.post(
        "/admin/experiments/experiment/",
        [
            ("action", "launch"),
            ("_selected_action", str(experiment_id)),
            ("apply", "1"),
            ("repeat", str(repeat)),
        ],
        form_path="/admin/experiments/experiment/",
    )
    assert "queued" in page or "launched" in page.lower(), page[-3000:]
    after = {r[0] for r in stack.query("SELECT id FROM experiments_run WHERE experiment_id = ?", experiment_id)}
    return sorted(after - before)


def launch(stack: Stack, name: str) -> int:
    """Launch the experiment ``name`` with ``manage.py launchrun``: its run's id."""
    return json.loads(stack.manage("launchrun", name, "--json").stdout)["run_ids"][0]
