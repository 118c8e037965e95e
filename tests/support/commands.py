"""``manage.py`` as a user runs it: ``manage()``, the one way a test runs a command in a process
of its own, and ``migrated_database()``, a migrated SQLite file of its own for such processes
(with the staff user ``staff``, password ``PASSWORD``)."""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "imq-e2e-password"


def manage(
    env: Mapping[str, str], *args: str, timeout: float = 120, check: bool = False
) -> subprocess.CompletedProcess:
    """``manage.py *args`` in a fresh process with the environment ``env`` (exactly it), its
    output captured as text. ``check``: assert that it exited 0, showing the end of its output."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=dict(env), capture_output=True, text=True, timeout=timeout
    )
    assert not check or done.returncode == 0, (
        f"manage.py {' '.join(args)} exited {done.returncode}\n{done.stderr[-3000:]}\n{done.stdout[-2000:]}"
    )
    return done


_template: Path | None = None


def migrated_database(dest: Path) -> Path:
    """A migrated SQLite database at ``dest``, with the staff user ``staff`` (password
    ``PASSWORD``): a copy of one migrated once per test session, since migrating takes seconds
    and a dozen tests need a database file of their own."""
    global _template
    if _template is None:
        folder = Path(tempfile.mkdtemp(prefix="imq-test-template-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        template = folder / "template.sqlite3"
        env = dict(os.environ, DATABASE_URL=f"sqlite:///{template}", DJANGO_SUPERUSER_PASSWORD=PASSWORD)
        for args in (
            ["migrate", "-v0"],
            ["createsuperuser", "--noinput", "--username", "staff", "--email", "staff@example.org"],
        ):
            subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True)
        with sqlite3.connect(template) as conn:  # everything into the main file: the copy needs no -wal
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _template = template
    shutil.copyfile(_template, dest)
    return dest


def sqlite_path(env: Mapping[str, str]) -> Path:
    """The SQLite file of an environment made for ``manage()`` (its ``DATABASE_URL``)."""
    return Path(env["DATABASE_URL"].removeprefix("sqlite:///"))
