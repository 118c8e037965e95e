"""The settings read every variable through ``imqueue_site.typed_env.Env``: a good value is read
as its type, a bad one is one line naming the variable and what it accepts, and ``manage.py`` and
the web server stop with that line alone (no traceback), exit status non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from imqueue_site.typed_env import Env, SettingError
from tests.support.commands import manage

ROOT = Path(__file__).resolve().parents[2]
REDIS_SCHEMES = ("redis", "rediss", "unix")


def read(kind: str, value: str | None):
    """The settings' own read of one variable of each kind, with ``value`` in the environment."""
    env = Env({} if value is None else {"VAR": value})
    reads = {
        "int": lambda: env.int("VAR", 3600, unit="seconds", minimum=1),
        "port": lambda: env.int("VAR", 9108, minimum=1, maximum=65535),
        "float": lambda: env.float("VAR", 2, unit="seconds", positive=True),
        "signed float": lambda: env.float("VAR", 0, unit="seconds"),
        "bool": lambda: env.bool("VAR", True),
        "choice": lambda: env.choice("VAR", "WARNING", ("DEBUG", "INFO", "WARNING")),
        "url": lambda: env.url("VAR", "", schemes=REDIS_SCHEMES, example="redis://127.0.0.1:6379/1"),
        "str": lambda: env.str("VAR", "imqueue"),
    }
    return reads[kind]()


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("int", "7200", 7200),
        ("int", " 60 ", 60),
        ("port", "65535", 65535),
        ("float", "0.5", 0.5),
        ("float", "30", 30.0),
        ("signed float", "-1.5", -1.5),
        ("bool", "false", False),
        ("bool", "Yes", True),
        ("bool", "0", False),
        ("bool", "ON", True),
        ("choice", "info", "INFO"),
        ("url", "redis://127.0.0.1:6379/1", "redis://127.0.0.1:6379/1"),
        ("url", "unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("str", "lab-2", "lab-2"),
    ],
)
def test_a_good_value_is_read_as_its_type(kind, value, expected):
    got = read(kind, value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("int", "1h", "VAR=1h: expected a whole number of seconds, at least 1 (e.g. 3600)"),
        ("int", "0", "VAR=0: expected a whole number of seconds, at least 1 (e.g. 3600)"),
        ("int", "2.5", "VAR=2.5: expected a whole number of seconds, at least 1 (e.g. 3600)"),
        ("port", "70000", "VAR=70000: expected a whole number, from 1 to 65535 (e.g. 9108)"),
        ("float", "2s", "VAR=2s: expected a number of seconds, above 0 (e.g. 2)"),
        ("float", "-1", "VAR=-1: expected a number of seconds, above 0 (e.g. 2)"),
        ("float", "0", "VAR=0: expected a number of seconds, above 0 (e.g. 2)"),
        ("signed float", "nan", "VAR=nan: expected a number of seconds (e.g. 0)"),
        ("signed float", "inf", "VAR=inf: expected a number of seconds (e.g. 0)"),
        ("bool", "ture", "VAR=ture: expected true or false (1/0, yes/no, on/off)"),
        ("bool", "2", "VAR=2: expected true or false (1/0, yes/no, on/off)"),
        ("choice", "verbose", "VAR=verbose: expected one of DEBUG, INFO, WARNING"),
        (
            "url",
            "localhost:6379",
            "VAR=localhost:6379: expected a URL starting redis:// or rediss:// or unix:// "
            "(e.g. redis://127.0.0.1:6379/1)",
        ),
        ("int", "1\n2", "VAR='1\\n2': expected a whole number of seconds, at least 1 (e.g. 3600)"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable_and_what_it_accepts(kind, value, message):
    with pytest.raises(SettingError) as raised:
        read(kind, value)
    assert str(raised.value) == message
    assert isinstance(raised.value, ImproperlyConfigured)  # what Django's tools expect of a setting


@pytest.mark.parametrize("kind", ["int", "port", "float", "signed float", "bool", "choice", "url"])
@pytest.mark.parametrize("value", [None, "", "  "])
def test_unset_or_empty_reads_the_default(kind, value):
    assert read(kind, value) == read(kind, None) and read(kind, None) is not None


def test_a_database_url_is_parsed_and_a_bad_one_is_named_with_its_password_masked():
    env = Env({"DATABASE_URL": "postgres://imq:pw@127.0.0.1:5432/imqueue"})
    database = env.database("DATABASE_URL", "sqlite:////tmp/x.sqlite3")
    assert database["ENGINE"] == "django.db.backends.postgresql" and database["NAME"] == "imqueue"
    assert Env({}).database("DATABASE_URL", "sqlite:////tmp/x.sqlite3")["NAME"] == "/tmp/x.sqlite3"
    for bad in ("postgress://imq:s3cret@127.0.0.1/imqueue", "postgres://imq:s3cret@127.0.0.1:port/imqueue"):
        with pytest.raises(SettingError) as raised:
            Env({"DATABASE_URL": bad}).database("DATABASE_URL", "sqlite:////tmp/x.sqlite3")
        assert str(raised.value).startswith(f"DATABASE_URL={bad.replace('s3cret', '***')}: expected a database URL")
        assert "s3cret" not in str(raised.value)


# -- as a person meets it: the commands and the web server ------------------------------------


def test_manage_py_reads_a_good_value():
    shown = manage(
        dict(os.environ, IMQ_RUN_TIMEOUT_S="7200", DJANGO_DEBUG="on", IMQ_LOG_LEVEL="error"),
        "shell",
        "-c",
        "from django.conf import settings as s; print(s.IMQ_RUN_TIMEOUT_S, s.Q_CLUSTER['timeout'], s.DEBUG, "
        "s.IMQ_LOG_LEVEL)",
        check=True,
    )
    assert shown.stdout.strip().splitlines()[-1] == "7200 7200 True ERROR"


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        ("IMQ_RUN_TIMEOUT_S", "1h", "IMQ_RUN_TIMEOUT_S=1h: expected a whole number of seconds, at least 1 (e.g. 3600)"),
        ("DJANGO_DEBUG", "ture", "DJANGO_DEBUG=ture: expected true or false (1/0, yes/no, on/off)"),
    ],
)
def test_manage_py_stops_on_a_bad_value_with_one_line(variable, value, line):
    result = manage(dict(os.environ, **{variable: value}), "check")
    assert result.returncode != 0
    assert result.stderr.strip() == f"ImproperlyConfigured: {line}"
    assert result.stdout == ""


def test_the_web_server_stops_on_a_bad_value_with_one_line():
    # a server that started anyway would serve until the timeout, which fails the test
    result = subprocess.run(
        [sys.executable, "-m", "daphne", "--port", "0", "imqueue_site.asgi:application"],
        cwd=ROOT,
        env=dict(os.environ, IMQ_Q_WORKERS="two"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert (
        result.stderr.strip() == "ImproperlyConfigured: IMQ_Q_WORKERS=two: expected a whole number, at least 1 (e.g. 1)"
    )
