"""A mistake on a command line is one line on stderr and exit status 1, the same as every other
bad input of our commands, and nothing is stored: an unknown flag or a missing value (argparse's
errors, which Django prints with the whole usage text and exit 2), and flags that the rest of
the command line would silently ignore."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from django.core.management import find_commands, load_command_class

import experiments.management
from experiments.management.base import BaseCommand
from tests.support.commands import manage

COMMANDS = sorted(find_commands(str(Path(experiments.management.__file__).parent)))


def runs_stored(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM experiments_run").fetchone()[0]


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_parses_its_line_with_the_one_line_parser(name):
    assert isinstance(load_command_class("experiments", name), BaseCommand), (
        f"{name}: build it on experiments.management.base.BaseCommand"
    )


@pytest.mark.parametrize(
    "args,error",
    [
        (["runexperiment", "--frobnicate"], "runexperiment: error: unrecognized arguments: --frobnicate"),
        (["runexperiment", "--backend"], "runexperiment: error: argument --backend: expected one argument"),
        (["listbackends", "--frobnicate"], "listbackends: error: unrecognized arguments: --frobnicate"),
    ],
)
def test_a_command_line_argparse_refuses_is_one_line_and_exit_1(cli_db, cli_db_path, args, error):
    before = runs_stored(cli_db_path)
    out = manage(cli_db, *args)
    assert out.returncode == 1, out.stderr
    assert one_line(out.stderr) == f"{error} (see manage.py {args[0]} --help)"
    assert runs_stored(cli_db_path) == before


@pytest.mark.parametrize(
    "args,says",
    [
        (["--slo-p99-ms", "50"], "--slo-p99-ms is the p99 limit of --find-max: add --find-max"),
        (["--duration", "0"], "--duration is the measured time of a steady run: add --rate (or --find-max)"),
        (["--events", "100", "--duration", "5"], "--duration is the measured time of a steady run: add --rate"),
    ],
)
def test_a_flag_the_run_would_ignore_is_refused_before_anything_is_stored(cli_db, cli_db_path, args, says):
    before = runs_stored(cli_db_path)
    out = manage(cli_db, "runexperiment", "--backend", "loop", *args)
    assert out.returncode == 1, out.stderr
    assert one_line(out.stderr).startswith(f"CommandError: {says}")
    assert runs_stored(cli_db_path) == before
