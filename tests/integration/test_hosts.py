"""Load hosts as a user starts them: separate ``qcluster`` processes, each with its own name
(``IMQ_HOST_NAME``), against one SQLite database; their heartbeats, ``manage.py hosts`` and the
clock offset each measured."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime

import pytest

from tests.support.stack import Stack, running
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

BEAT = {"IMQ_HOST_BEAT_S": "0.3", "IMQ_HOST_ALIVE_S": "1.5"}


@pytest.fixture
def stack(tmp_path):
    """A stack of the test's own, not started (its database migrated): each test starts its hosts."""
    stack = Stack(tmp_path, web=False)
    stack.env.update(BEAT)  # the hosts beat fast, and every process judges them by it
    with running(stack, start=False) as migrated:  # and stopped at the end
        yield migrated


def listed(stack: Stack, *args: str) -> dict[str, dict]:
    out = stack.manage("hosts", "--json", *args, check=True)
    return {row["name"]: row for row in json.loads(out.stdout)}


def silent_for(stack: Stack, name: str) -> float:
    """Seconds since host ``name`` last wrote its heartbeat (SQLite stores UTC, ISO format)."""
    (seen,) = stack.query("SELECT last_seen FROM experiments_host WHERE name = ?", name)[0]
    return (datetime.now(UTC) - datetime.fromisoformat(seen).replace(tzinfo=UTC)).total_seconds()


def test_hosts_answer_with_their_clock_offset_and_a_killed_one_stops_answering(stack):
    skew_s = 2.5  # host b's clock reads 2.5 s ahead: its offset to the database is -2.5 s
    stack.start_host("a")
    stack.start_host("b", IMQ_CLOCK_SKEW_S=str(skew_s))
    wait_until(
        lambda: len(stack.query("SELECT name FROM experiments_host WHERE clock_offset_s IS NOT NULL")) == 2,
        60,
        "hosts a and b to answer",
        interval_s=0.1,
    )
    hosts = listed(stack)
    a, b = hosts["a"], hosts["b"]
    assert a["queue"] == "imq-host-a" and b["queue"] == "imq-host-b"
    assert a["cpus"] >= 1 and a["workers"] == 1 and a["busy"] == 0
    # one machine, one clock: a's true offset is 0 and b's -skew, each within its uncertainty
    assert abs(a["clock_offset_ms"]) <= a["clock_uncertainty_ms"], a
    assert abs(b["clock_offset_ms"] + skew_s * 1000) <= b["clock_uncertainty_ms"], b
    assert 0 < b["clock_uncertainty_ms"] < 50  # a local database answers within a few ms
    assert "database (sqlite)" == b["clock_reference"]
    # a host killed outright (its whole cluster) stops answering once its heartbeat is old
    killed = stack.procs.pop("host-a")
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=10)
    wait_until(lambda: silent_for(stack, "a") > 1.5, 30, "host a's heartbeat to be old", interval_s=0.1)
    assert set(listed(stack)) == {"b"} and listed(stack, "--all")["a"]["state"] == "silent"
    text = stack.manage("hosts").stdout
    assert "imq-host-b" in text and "imq-host-a" not in text
