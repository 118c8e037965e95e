"""IMQ_LOG_LEVEL shows a run's log lines on stderr, with time, process and logger; pika's own
lines about a failed connection stay hidden, leaving our one-line error."""

from __future__ import annotations

import re

from tests.support.commands import manage

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO MainProcess\[\d+\] queues\.run\.launch: run \S+: memory "
)


def test_info_shows_the_runs_lines_on_stderr(cli_db):
    out = manage(
        {**cli_db, "IMQ_LOG_LEVEL": "info"}, "runexperiment", "--backend", "memory", "--events", "1000", "--json"
    )
    assert out.returncode == 0, out.stderr
    assert any(LINE.match(line) for line in out.stderr.splitlines()), out.stderr
    assert out.stdout.lstrip().startswith("{")  # the log never goes to stdout


def test_a_refused_broker_connection_is_one_line_without_pikas_own(cli_db):
    env = {**cli_db, "IMQ_AMQP_URL": "amqp://guest:pw@127.0.0.1:1/%2F"}
    out = manage(env, "runexperiment", "--backend", "rabbitmq", "--events", "100")
    assert out.returncode == 1
    assert "pika" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "check the server or set IMQ_AMQP_URL" in errors[0], out.stderr
