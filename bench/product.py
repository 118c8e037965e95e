"""The product as a user runs it, for the benchmarks: a qcluster and daphne as separate
processes on a database of their own. (The tests have the same in ``tests/support/stack.py``; a
benchmark must not import the tests.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "imq-bench-password"


class Product:
    """A real ``qcluster`` (and, with ``web``, daphne) on a SQLite database of their own, with a
    staff user ``bench``; stopped by ``stop``."""

    def __init__(self, *, web: bool = True) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="imq-bench-dashboard-"))
        self.db = self.folder / "db.sqlite3"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.env = dict(
            os.environ,
            DATABASE_URL=f"sqlite:///{self.db}",
            IMQ_RUN_LOCK_PATH=str(self.folder / "lock"),
            IMQ_METRICS_DIR=str(self.folder / "metrics"),
            DJANGO_SUPERUSER_PASSWORD=PASSWORD,
            PYTHONPATH=str(ROOT),
        )
        self.manage("migrate", "-v0")
        self.manage("createsuperuser", "--noinput", "--username", "bench", "--email", "bench@example.org")
        self.procs = [self._spawn("manage.py", "qcluster")]
        if not web:
            return
        self.procs.append(
            self._spawn("-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "imqueue_site.asgi:application")
        )
        deadline = time.monotonic() + 60
        while not self._answers():
            if time.monotonic() > deadline:
                raise SystemExit("the web server did not answer in 60 s")
            time.sleep(0.2)

    def manage(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True, capture_output=True, text=True
        ).stdout

    def _spawn(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("/admin/login/"), timeout=2):
                return True
        except OSError:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def define(self, name: str, **fields) -> None:
        values = ", ".join(f"{k}={v!r}" for k, v in {"name": name, **fields}.items())
        self.manage("shell", "-c", f"from experiments.models import Experiment; Experiment.objects.create({values})")

    def launch(self, name: str) -> int:
        return json.loads(self.manage("launchrun", name, "--json"))["run_ids"][0]

    def row(self, run_id: int) -> dict:
        with sqlite3.connect(self.db, timeout=30) as conn:
            conn.row_factory = sqlite3.Row
            return dict(conn.execute("SELECT * FROM experiments_run WHERE id = ?", (run_id,)).fetchone())

    def wait(self, run_id: int, *, status: str | None = None, timeout_s: float = 300) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            row = self.row(run_id)
            if (row["status"] == status) if status else row["finished_at"]:
                return row
            if time.monotonic() > deadline:
                raise SystemExit(f"run {run_id} did not reach {status or 'its end'} in {timeout_s} s")
            time.sleep(0.01)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()  # the main process stops its own in order
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
