"""Options and knobs a run would ignore are refused before anything is stored; the options in
force are recorded; listbackends shows the declarations. Real processes, real stdout."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.support.commands import manage


def stored(path) -> tuple[int, int]:
    with sqlite3.connect(path) as db:
        runs = db.execute("SELECT COUNT(*) FROM experiments_run").fetchone()[0]
        experiments = db.execute("SELECT COUNT(*) FROM experiments_experiment").fetchone()[0]
    return runs, experiments


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--option", "no_such_knob=3"], "memory-mp has no option 'no_such_knob'; its options: consume_cost_us, "),
        (["--option", "max_dept=3"], "memory-mp has no option 'max_dept' (did you mean 'max_depth'?)"),
        (
            ["--option", "max_depth=abc"],
            "memory-mp: option max_depth must be a whole number of at least 0 messages, got 'abc'",
        ),
        (["--option", "stall_s=-1"], "memory-mp: option stall_s must be a number from 0 to 3600 s, got '-1'"),
        (
            ["--backend", "rabbitmq", "--option", "confirms=all"],
            "rabbitmq: option confirms must be one of off, message, batch",
        ),
        (
            ["--backend", "loop", "--rate", "1000"],
            "the loop approach runs bursts only: a steady rate (--rate) needs a queue backend",
        ),
        (["--backend", "asyncio", "--find-max", "--slo-p99-ms", "5"], "the asyncio approach runs bursts only"),
        (["--backend", "futures", "--option", "prefetch=10"], "the futures approach takes no options (got prefetch)"),
    ],
)
def test_a_bad_option_or_an_ignored_knob_is_one_line_exit_1_and_stores_nothing(cli_db, cli_db_path, args, expected):
    env, path = cli_db, cli_db_path
    before = stored(path)
    out = manage(env, "runexperiment", "--experiment", "bad-option", *args)
    assert out.returncode == 1
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], out.stderr
    assert stored(path) == before  # no run, no experiment, nothing half-written


def test_the_run_records_every_option_in_force_defaults_included(cli_db):
    env = cli_db
    out = manage(
        env, "runexperiment", "--events", "2000", "--option", "max_depth=5000", "--json", "--experiment", "opts"
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    expected = {"consume_cost_us": 0.0, "stall_after": 0, "stall_s": 0.0, "max_depth": 5000, "max_backlog_mb": 256.0}
    assert summary["options"] == summary["environment"]["options"] == expected
    assert summary["verdict"] == "exact"

    approach = json.loads(manage(env, "runexperiment", "--backend", "loop", "--events", "100", "--json").stdout)
    assert approach["options"] == approach["environment"]["options"] == {}


def test_listbackends_shows_each_backends_options(cli_db):
    env = cli_db
    out = manage(env, "listbackends", "--json")
    assert out.returncode == 0, out.stderr
    rows = {row["alias"]: row for row in json.loads(out.stdout)}
    prefetch = {o["name"]: o for o in rows["rabbitmq"]["options"]}["prefetch"]
    assert prefetch["default"] == 1000 and prefetch["type"] == "int" and prefetch["unit"] == "messages"
    assert (prefetch["minimum"], prefetch["maximum"]) == (1, 65_535) and prefetch["help"]
    confirms = {o["name"]: o for o in rows["rabbitmq"]["options"]}["confirms"]
    assert confirms["choices"] == ["off", "message", "batch"] and confirms["default"] == "off"
    assert [o["name"] for o in rows["memory-mp"]["options"]] == [
        "consume_cost_us",
        "stall_after",
        "stall_s",
        "max_depth",
        "max_backlog_mb",
    ]
    assert [o["name"] for o in rows["memory"]["options"]] == ["max_backlog_mb"] and rows["loop"]["options"] == []

    text = manage(env, "listbackends").stdout
    assert "--option prefetch=1000  int: a whole number from 1 to 65535 messages; basic_qos prefetch count" in text
    assert "--option persistent=false  bool: true or false;" in text
