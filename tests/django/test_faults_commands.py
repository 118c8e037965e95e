"""Faults from the command line, and the scorecard: the matrix stored as a series, its table
printed and written into the docs' scorecard page, the admin's page of the latest one."""

import json
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from experiments.models import Experiment, Run, RunSeries
from experiments.services.scorecard import (
    PAGE_BEGIN,
    PAGE_END,
    SCORECARD_PAGE,
    scorecard_markdown,
    scorecard_page_write,
)
from queues.errors import QueueError


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--fault", "kill-consumer@1"], r"needs a steady run: set rate_eps \(--rate\)"),
        (["--rate", "100", "--duration", "2", "--fault", "boom@1"], "unknown fault kind 'boom'"),
        (["--rate", "100", "--duration", "2", "--fault", "kill-consumer@2"], "at or after the run's end at 2 s"),
        (["--rate", "100", "--duration", "2", "--fault", "kill-consumer@1:3"], "targets consumer 3"),
        (
            ["--rate", "100", "--duration", "2", "--backend", "memory", "--fault", "restart-server@1"],
            "fault restart-server@1: memory",
        ),
        (["--rate", "100", "--duration", "2", "--backend", "loop", "--fault", "poison@1"], "takes no faults"),
    ],
)
def test_a_fault_that_cannot_run_is_one_line_and_stores_nothing(args, says):
    with pytest.raises(CommandError, match=says) as caught:
        call_command("runexperiment", *args)
    assert "\n" not in str(caught.value)
    assert not Run.objects.exists() and not Experiment.objects.exists()


@pytest.mark.django_db
def test_a_run_with_faults_stores_its_markers_and_reports_them(capsys):
    call_command(
        "runexperiment",
        "--backend",
        "memory-mp",
        "--rate",
        "1000",
        "--duration",
        "2",
        "--consumers",
        "2",
        "--fault",
        "kill-consumer@0.5",
        "--fault",
        "poison@1:2",
        "--replace-after",
        "0.2",
        "--idle-timeout",
        "1",
        "--json",
    )
    summary = json.loads(capsys.readouterr().out)
    run = Run.objects.get(pk=summary["run_id"])
    assert run.spec["faults"] == ["kill-consumer@0.5", "poison@1:2"] and run.spec["replace_after_s"] == 0.2
    assert [f["fault"] for f in summary["faults"]] == ["kill-consumer@0.5", "poison@1:2"]
    assert summary["poison"] == 2 and summary["guarantee"] == "at-most-once" and summary["contradictions"] == []
    stored = [m for markers in run.samples.exclude(markers=None).values_list("markers", flat=True) for m in markers]
    assert [m["kind"] for m in stored] == [m["kind"] for m in summary["markers"]]
    assert {"kill-consumer", "replaced", "poison"} <= {m["kind"] for m in stored}


@pytest.mark.django_db
def test_the_text_report_lists_each_fault_and_the_guarantee(capsys):
    call_command(
        "runexperiment",
        "--backend",
        "memory-mp",
        "--rate",
        "1000",
        "--duration",
        "2",
        "--fault",
        "poison@0.5:2",
        "--idle-timeout",
        "1",
    )
    report = capsys.readouterr().out
    assert "  fault                  poison@0.5:2 at 0." in report and ": 2 malformed message(s) sent" in report
    assert "  faults' effects        0 reconnect(s), 0 worker(s) replaced" in report
    assert "  guarantee              at-most-once: kept" in report


RESULT = {
    "series_id": 7,
    "repeats": 1,
    "rate_eps": 1000.0,
    "duration_s": 8.0,
    "backends": ["redis-list", "memory"],
    "faults": ["kill-consumer@2"],
    "cells": [
        {
            "backend": "redis-list",
            "fault": "kill-consumer@2",
            "spec": {},
            "not_applicable": None,
            "runs": [3],
            "statuses": ["succeeded"],
            "verdicts": ["duplicated"],
            "guarantee": "at-least-once",
            "errors": [],
            "contradictions": [],
            "recovered_after_s": 1.5,
            "lost": 0,
            "duplicates": 12,
            "redelivered": 12,
            "poison": 0,
            "reconnects": 0,
            "outcome": "SIGKILL pid 1",
        },
        {
            "backend": "redis-list-noack",
            "fault": "kill-consumer@2",
            "spec": {},
            "not_applicable": None,
            "runs": [4],
            "statuses": ["succeeded"],
            "verdicts": ["lost"],
            "guarantee": "at-least-once",
            "errors": [],
            "contradictions": ["declares at-least-once, but 9 event(s) were lost"],
            "recovered_after_s": None,
            "lost": 9,
            "duplicates": 0,
            "redelivered": 0,
            "poison": 0,
            "reconnects": 0,
            "outcome": "SIGKILL pid 2",
        },
        {
            "backend": "memory",
            "fault": "kill-consumer@2",
            "spec": None,
            "not_applicable": "memory runs its workers as threads, which cannot be signalled",
        },
    ],
}


def test_the_scorecard_table_has_a_row_a_cell_and_names_a_contradiction():
    table = scorecard_markdown(RESULT)
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert rows[0] == (
        "| `redis-list` | `kill-consumer@2` | at-least-once | duplicated | 0 | 12 | 12 | 0 | 1.5 s | 0 | yes |"
    )
    assert (
        "| 9 | 0 | 0 | 0 | not within the run | 0 | **no**: declares at-least-once, but 9 event(s) were lost |"
        in rows[1]
    )
    assert rows[2].startswith("| `memory` | `kill-consumer@2` | | n/a |") and rows[2].endswith("cannot be signalled |")
    assert "median of 1 run(s)" in table and "Series 7" in table


def test_the_page_gets_the_table_between_its_lines_and_nothing_else_changes(tmp_path):
    page = tmp_path / "scorecard.md"
    page.write_text(f"# title\n\nbefore\n{PAGE_BEGIN}\nold table\n{PAGE_END}\nafter\n")
    scorecard_page_write(markdown="| new |\n", path=page)
    assert page.read_text() == f"# title\n\nbefore\n{PAGE_BEGIN}\n| new |\n{PAGE_END}\nafter\n"
    page.write_text("no lines here\n")
    with pytest.raises(QueueError, match="has no <!-- scorecard:begin -->"):
        scorecard_page_write(markdown="x", path=page)


def test_the_checked_in_scorecard_page_has_its_lines_and_a_table_between_them():
    text = (Path(settings.BASE_DIR) / SCORECARD_PAGE).read_text()
    table = text[text.index(PAGE_BEGIN) : text.index(PAGE_END)]
    assert "generated by `python manage.py scorecard --write-docs`" in table
    assert "| `redis-list` | `kill-consumer@2` |" in table


@pytest.mark.django_db(transaction=True)
def test_the_scorecard_command_runs_the_matrix_stores_it_and_writes_the_page(tmp_path, capsys, admin_client):
    page = tmp_path / "scorecard.md"
    page.write_text(f"intro\n{PAGE_BEGIN}\n{PAGE_END}\n")
    call_command(
        "scorecard",
        "--backends",
        "memory-mp,memory",
        "--faults",
        "kill-consumer@1,poison@1:3",
        "--rate",
        "500",
        "--duration",
        "2",
        "--write-docs",
        str(page),
    )
    printed = capsys.readouterr().out
    series = RunSeries.objects.get(kind=RunSeries.Kind.SCORECARD)
    cells = series.result["cells"]
    assert [(c["backend"], c["fault"], bool(c["not_applicable"])) for c in cells] == [
        ("memory-mp", "kill-consumer@1", False),
        ("memory-mp", "poison@1:3", False),
        ("memory", "kill-consumer@1", True),
        ("memory", "poison@1:3", False),
    ]
    assert series.runs.count() == 3 and series.status == "succeeded"
    poison = cells[1]
    assert poison["poison"] == 3 and poison["verdicts"] == ["exact"] and poison["contradictions"] == []
    table = page.read_text()
    assert printed.strip() in table and "| `memory` | `kill-consumer@1` | | n/a |" in table
    page = admin_client.get(reverse("admin:experiments_runseries_scorecard"), follow=True).content.decode()
    assert "Scorecard: each backend under each fault" in page and "<code>poison@1:3</code>" in page


@pytest.mark.django_db
def test_the_scorecard_refuses_a_bad_fault_or_backend_before_running_anything():
    with pytest.raises(CommandError, match="unknown fault kind 'nope'"):
        call_command("scorecard", "--backends", "memory-mp", "--faults", "nope@1")
    with pytest.raises(CommandError, match="unknown backend 'redis-lst'"):
        call_command("scorecard", "--backends", "redis-lst", "--faults", "poison@1")
    with pytest.raises(CommandError, match="--write-docs .*nope.md: no such file; give the scorecard page's path"):
        call_command("scorecard", "--backends", "memory-mp", "--faults", "poison@1", "--write-docs", "nope.md")
    assert not Run.objects.exists()


def test_a_restart_cell_pauses_the_consumers_around_it_so_the_queue_holds_a_backlog():
    from experiments.services.scorecard import RESTART_BACKLOG, scorecard_plan

    [restart, kill] = scorecard_plan(
        backends=["redis-list"], faults=["restart-server@2", "kill-consumer@2"], rate_eps=1000, duration_s=8
    )
    assert list(restart["spec"]["faults"]) == ["restart-server@2", *RESTART_BACKLOG]
    assert list(kill["spec"]["faults"]) == ["kill-consumer@2"]
