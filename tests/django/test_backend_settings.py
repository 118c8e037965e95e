"""What a user sees when a server URL is wrong or a server says nothing: one line naming the
setting, from ``runexperiment`` and ``listbackends`` alike; ``listbackends`` still lists every
other backend and says each one's guarantee in words. Real processes, real stdout."""

from __future__ import annotations

import json

import pytest

from queues.backends import BACKENDS, backend_class
from tests.support.commands import manage

MALFORMED = {
    "IMQ_AMQP_URL": "rabbitmq",
    "IMQ_POSTGRES_URL": "postgres",
    "IMQ_MYSQL_URL": "mysql",
    "IMQ_REDIS_URL": "redis-list",
}


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize("setting,alias", sorted(MALFORMED.items()))
def test_a_malformed_url_fails_the_run_in_one_line_naming_the_setting(cli_db, setting, alias):
    out = manage({**cli_db, setting: "nonsense"}, "runexperiment", "--backend", alias, "--events", "100")
    assert out.returncode == 1
    line = one_line(out.stderr)
    assert f"{alias}: malformed URL nonsense" in line and f"set {setting} to a URL like" in line


def test_listbackends_with_a_malformed_url_still_lists_the_others_with_their_guarantees(cli_db):
    out = manage({**cli_db, "IMQ_AMQP_URL": "nonsense"}, "listbackends", "--json")
    assert out.returncode == 0, out.stderr
    rows = {row["alias"]: row for row in json.loads(out.stdout)}
    assert set(BACKENDS) <= set(rows)
    assert rows["rabbitmq"]["state"] == "unreachable" and "IMQ_AMQP_URL" in rows["rabbitmq"]["detail"]
    assert rows["rabbitmq"]["guarantee"] == "at-least-once"  # what it would guarantee, URL or not
    assert rows["memory"]["state"] == "ready"
    for alias in BACKENDS:
        assert rows[alias]["guarantee"] == backend_class(alias).capabilities.guarantee(), alias
    assert rows["memory-mp"]["guarantee"] == rows["redis-list-noack"]["guarantee"] == "at-most-once"
    assert rows["loop"]["guarantee"] is None  # an approach moves nothing through a queue

    text = manage({**cli_db, "IMQ_AMQP_URL": "nonsense"}, "listbackends").stdout
    assert "at-most-once: depth, native_batch" in text and "at-least-once: acks, redelivers_on_crash" in text
    assert "rabbitmq: malformed URL nonsense" in text


def test_a_silent_broker_is_one_line_without_pikas_own(cli_db, silent_port):
    """pika logs the failed handshake itself (the logging settings keep it quiet unless DEBUG)."""
    env = {**cli_db, "IMQ_AMQP_URL": f"amqp://guest:pw@127.0.0.1:{silent_port}/%2F"}
    out = manage(env, "runexperiment", "--backend", "rabbitmq", "--events", "100", "--option", "connect_timeout_s=1")
    assert out.returncode == 1
    line = one_line(out.stderr)
    assert "pika" not in out.stderr and "check the server or set IMQ_AMQP_URL" in line
