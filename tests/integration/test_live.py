"""The live dashboard end to end: a run launched from the admin executes in a real ``qcluster``
process, and a real websocket client on the real daphne server (session cookie, Origin header,
as a browser sends them) receives its samples live, resumes after a dropped connection without
gaps or repeats, and gets the verdict. Both live paths: following the SQLite file (no Redis), and channels-redis.

Why the stack rather than ``WebsocketCommunicator`` here: the run must execute in another
process, and pytest-django's SQLite test database is in memory, invisible to it; the stack's
database is a file that daphne and the cluster share, as in production."""

from __future__ import annotations

import json
import time

import pytest
import redis
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.support.stack import Stack, define, launch_from_admin, wait_for_run

pytestmark = [
    pytest.mark.timeout(240),
    # the product with each live path: following the stored samples (embedded default), or
    # channels-redis (the executor publishes each sample to the run's group)
    pytest.mark.parametrize("stack", ["database", "redis"], indirect=True, scope="module"),
]


def session_cookie(stack: Stack) -> str:
    jar = next(h.cookiejar for h in stack.opener.handlers if hasattr(h, "cookiejar"))
    return "; ".join(f"{c.name}={c.value}" for c in jar)


def open_socket(stack: Stack, path: str, *, origin: str | None = None):
    return connect(
        f"ws://127.0.0.1:{stack.port}{path}",
        open_timeout=10,
        additional_headers={"Cookie": session_cookie(stack), "Origin": origin or f"http://127.0.0.1:{stack.port}"},
    )


def receive_until(ws, done, *, timeout_s: float) -> list[dict]:
    messages: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while not done(messages):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; got {messages[-3:]}"
        messages.append(json.loads(ws.recv(timeout=left)))
    return messages


def t_s_of(messages: list[dict]) -> list[float]:
    return [t for m in messages for t in (m.get("columns") or {}).get("t_s", [])]


def test_staff_watch_a_run_executing_in_the_cluster_live_and_resume_after_a_drop(stack):
    experiment = define(
        stack, "live-e2e", backend="memory", rate_eps=300.0, duration_s=5.0, warmup_s=0.0, producers=1, consumers=1
    )
    (run_id,) = launch_from_admin(stack, experiment)
    assert 'id="status"' in stack.get(f"/dashboard/runs/{run_id}/")

    with open_socket(stack, f"/ws/runs/{run_id}/") as ws:  # opened while queued: all is live
        first = receive_until(ws, lambda ms: len(t_s_of(ms)) >= 2, timeout_s=90)
        if stack.live_path == "redis":  # the page really joined the run's group on the server
            client = redis.Redis.from_url(stack.env["IMQ_CHANNEL_REDIS_URL"])
            assert list(client.scan_iter(match=stack.env["IMQ_CHANNEL_PREFIX"] + "*")), "no channels-redis keys"
            client.close()
    live_states = {m["run"]["status"] for m in first if m["columns"].get("t_s")}
    assert live_states == {"running"}, first  # samples arrived while it ran, not after

    last = t_s_of(first)[-1]
    with open_socket(stack, f"/ws/runs/{run_id}/?after={last}") as ws:
        rest = receive_until(ws, lambda ms: bool(ms) and ms[-1]["run"]["ended"], timeout_s=90)

    row = wait_for_run(stack, run_id, timeout_s=30)
    stored = [r[0] for r in stack.query("SELECT t_s FROM experiments_sample WHERE run_id = ? ORDER BY t_s", run_id)]
    assert t_s_of(first) + t_s_of(rest) == stored and len(stored) >= 4
    final = rest[-1]["run"]
    assert final["status"] == row["status"] == "succeeded" and final["verdict"] == row["verdict"] == "exact"
    assert final["progress"] == 1.0 and final["summary"]["unique"] == final["ledger"]["unique"] == 1500


def test_the_real_server_refuses_a_foreign_origin_and_a_missing_login(stack):
    with pytest.raises(InvalidStatus) as foreign:
        open_socket(stack, "/ws/runs/", origin="http://evil.example")
    assert foreign.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as anonymous:
        connect(
            f"ws://127.0.0.1:{stack.port}/ws/runs/",
            open_timeout=10,
            additional_headers={"Origin": f"http://127.0.0.1:{stack.port}"},
        )
    assert anonymous.value.response.status_code == 403
