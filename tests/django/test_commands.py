"""runexperiment and listbackends, as a user runs them: real processes, real stdout."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from experiments.models import Experiment, Run
from tests.support.commands import manage

JSON_KEYS = {
    "run_id",
    "backend",
    "events",
    "producers",
    "consumers",
    "duration_s",
    "throughput_eps",
    "sum",
    "expected_sum",
    "unique",
    "duplicates",
    "lost",
    "verdict",
    "latency_ms",
    "environment",
    "verdict_reasons",
    "recovered_at_end",
    "stuck",
    "killed_consumers",
    "killed_workers",
    "findings",
    "corrupt",
    "poison",
}


def stored_runs(env) -> int:
    """The runs in the command's database, read directly (a ``manage.py shell`` costs 2 s)."""
    with sqlite3.connect(env["DATABASE_URL"].removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT COUNT(*) FROM experiments_run").fetchone()[0]


def test_json_prints_exactly_one_object_with_the_documented_keys(cli_db):
    out = manage(
        cli_db, "runexperiment", "--events", "20000", "--consumers", "2", "--json", "--experiment", "json-contract"
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)  # the whole of stdout is one JSON document
    assert JSON_KEYS <= set(summary)
    assert summary["verdict"] == "exact" and summary["sum"] == summary["expected_sum"] == 20000 * 20001 // 2
    assert set(summary["latency_ms"]) == {"p50", "p90", "p99", "p999", "max"}
    assert summary["environment"]["cpu_count"] >= 1 and summary["environment"]["python"]
    assert "numpy" in summary["environment"]["libraries"]


def test_readable_report_names_the_sum_and_verdict(cli_db):
    out = manage(cli_db, "runexperiment", "--backend", "asyncio", "--events", "5000")
    assert out.returncode == 0, out.stderr
    assert "sum                    12,502,500 (expected 12,502,500) OK" in out.stdout
    assert "verdict                exact: 5,000 unique, 0 duplicates, 0 lost, 0 corrupt, 0 poison" in out.stdout


def test_readable_report_of_a_queue_shows_the_final_drain(cli_db):
    out = manage(cli_db, "runexperiment", "--backend", "memory-mp", "--events", "5000")
    assert out.returncode == 0, out.stderr
    assert "final drain            0 recovered at the end, 0 stuck in the queue" in out.stdout


def test_readable_report_never_prints_a_mismatch_beside_an_exact_verdict():
    from types import SimpleNamespace

    from experiments.reports.text import format_report

    summary = {
        "backend": "postgres",
        "events": 4,
        "producers": 1,
        "consumers": 2,
        "events_per_message": 1,
        "batch": 10,
        "sum": 12,
        "expected_sum": 10,
        "unique": 4,
        "duplicates": 0,
        "lost": 0,
        "corrupt": 1,
        "poison": 0,
        "verdict": "corrupt",
        "verdict_reasons": ["1 corrupt record(s): well-formed events that are not the run's"],
        "duration_s": 0.1,
        "throughput_eps": 40.0,
        "recovered_at_end": 1,
        "stuck": 0,
        "killed_workers": [
            {
                "role": "consumer",
                "index": 0,
                "reason": "hung past the stop timeout (10 s)",
                "reported": 2,
                "new_after_kill": 1,
            }
        ],
        "findings": [],
    }
    run = SimpleNamespace(
        pk=7, status="succeeded", error="", summary=summary, experiment=SimpleNamespace(name="x"), environment={}
    )
    text = format_report(run)
    assert "sum                    12 (expected 10) MISMATCH" in text
    assert "verdict                corrupt: 4 unique, 0 duplicates, 0 lost, 1 corrupt, 0 poison" in text
    assert "1 corrupt record(s)" in text and "1 recovered at the end, 0 stuck" in text
    assert "killed                 consumer 0: hung past the stop timeout (10 s)" in text


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--events", "0"], "events must be a whole number from 1 to"),
        (["--events", "-3"], "events must be a whole number from 1 to"),
        (["--events", "2.5"], "events must be a whole number from 1 to"),
        (["--events", "lots"], "events must be a whole number from 1 to"),
        (["--consumers", "0"], "consumers must be a whole number from 1 to"),
        (["--backend", "memroy-mp"], "unknown backend 'memroy-mp' (did you mean 'memory-mp'?)"),
        (["--option", "novalue"], "--option takes NAME=VALUE"),
    ],
)
def test_bad_input_is_one_line_non_zero_and_stores_nothing(cli_db, args, expected):
    before = stored_runs(cli_db)
    out = manage(cli_db, "runexperiment", "--experiment", "bad-input", *args)
    assert out.returncode != 0
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert stored_runs(cli_db) == before  # no half-written run


def test_listbackends_lists_every_backend_and_approach(cli_db):
    out = manage(cli_db, "listbackends", "--json")
    assert out.returncode == 0, out.stderr
    rows = {row["alias"]: row for row in json.loads(out.stdout)}
    assert {"memory", "memory-mp", "loop", "asyncio", "futures", "reactive"} <= set(rows)
    assert rows["memory-mp"]["capabilities"]["acks"] is False
    assert rows["memory"]["state"] == "ready"
    text = manage(cli_db, "listbackends")
    assert "memory-mp" in text.stdout and "reactive" in text.stdout


@pytest.mark.django_db
def test_a_run_is_stored_with_samples_environment_and_figures(capsys):
    call_command("runexperiment", "--events", "3000", "--experiment", "stored", "--json")
    summary = json.loads(capsys.readouterr().out)
    run = Run.objects.get(pk=summary["run_id"])
    assert run.experiment == Experiment.objects.get(name="stored")
    assert run.status == "succeeded" and run.verdict == "exact"
    assert run.unique == 3000 and run.lost == 0 and run.duplicates == 0
    assert run.throughput_eps > 0 and run.latency_p99_ms >= run.latency_p50_ms > 0
    assert run.samples.count() >= 1 and run.samples.last().consumed == 3000
    assert run.environment["python"] and run.spec["events"] == 3000


@pytest.mark.django_db
def test_a_run_that_fails_midway_is_stored_as_failed_with_its_error(monkeypatch):
    from queues.backends import BACKENDS
    from queues.workers import link

    monkeypatch.setattr(link, "RECONNECT_GIVE_UP_S", 0.3)  # the server stays gone: stop reconnecting soon

    # a backend whose producer loses its server after a few batches (tests/support/doubles.py)
    monkeypatch.setitem(BACKENDS, "server-lost", "tests.support.doubles.ServerLostBackend")
    with pytest.raises(CommandError, match="failed: .*connection lost"):
        call_command("runexperiment", "--backend", "server-lost", "--events", "10000", "--batch", "100")
    run = Run.objects.get()
    assert run.status == "failed" and "connection lost" in run.error
    assert run.unique == 300 and run.lost == 10000 - 300  # what was counted is kept


@pytest.mark.django_db
def test_the_cancel_probe_stays_off_the_database_at_the_start_and_still_notices_a_cancel():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from experiments.services.runs import CANCEL_CHECK_S, _CancelProbe, run_cancel, run_prepare
    from queues.workload.spec import WorkloadSpec

    run = run_prepare(spec=WorkloadSpec(backend="memory-mp", events=10), experiment_name="probe")
    probe = _CancelProbe(run.pk, None)
    with CaptureQueriesContext(connection) as queries:
        assert probe() is False  # the start signal: the first query after fork would fault the heap
    assert len(queries) == 0
    assert run_cancel(run=run)
    deadline = time.monotonic() + 10 * CANCEL_CHECK_S
    while not probe():
        assert time.monotonic() < deadline, "the cancel was not noticed"
        time.sleep(0.01)
