"""Several commands writing the embedded SQLite database at once never fail with "database is
locked" (WAL, IMMEDIATE transactions and a busy timeout: see settings.py)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.support.commands import migrated_database

ROOT = Path(__file__).resolve().parents[2]
COMMANDS_AT_ONCE = 4
ROUNDS = 3


def test_four_commands_at_once_on_sqlite_all_store_their_runs(tmp_path):
    db = migrated_database(tmp_path / "concurrent.sqlite3")
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{db}")
    run_ids = []
    for _ in range(ROUNDS):
        procs = [
            subprocess.Popen(
                [sys.executable, "manage.py", "runexperiment", "--events", "5000", "--json"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(COMMANDS_AT_ONCE)
        ]
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
            summary = json.loads(out)
            assert summary["verdict"] == "exact"
            run_ids.append(summary["run_id"])
    assert len(set(run_ids)) == COMMANDS_AT_ONCE * ROUNDS
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        stored = conn.execute("SELECT COUNT(*) FROM experiments_run WHERE status = 'succeeded'").fetchone()[0]
    assert stored == COMMANDS_AT_ONCE * ROUNDS
