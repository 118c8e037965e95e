"""The live dashboard's websockets through the real ASGI application (origin check, session
auth, routing), with ``WebsocketCommunicator``: who may connect, history then live, resuming
with ``after``, the shared follower, and the Redis path with its publisher. Each scenario runs
in one event loop through ``async_to_sync``; the database calls inside run in the test's thread.
The cross-process case (a run executing in a real cluster) is tests/integration/test_live.py."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from experiments import selectors
from experiments.live import publisher
from experiments.live import source as live
from experiments.models import Experiment, Run, Sample
from imqueue_site.asgi import application
from tests.support.servers import unavailable

ORIGIN = (b"origin", b"http://testserver")
pytestmark = pytest.mark.django_db(transaction=True)  # the consumers read through their own calls


def make_run(name: str, *, status: str = Run.Status.RUNNING, spec: dict | None = None) -> Run:
    experiment = Experiment.objects.create(name=f"{name}-{uuid.uuid4().hex[:6]}")
    return Run.objects.create(
        experiment=experiment,
        status=status,
        backend="memory",
        spec=spec or {"events": 1000, "producers": 1, "consumers": 1},
    )


def add_sample(run_id: int, t_s: float) -> Sample:
    unique = int(t_s * 100)
    return Sample.objects.create(
        run_id=run_id,
        t_s=t_s,
        produced=unique,
        consumed=unique,
        unique=unique,
        produce_eps=100.0,
        consume_eps=100.0,
        backlog=0,
        depth=3,
        p99_ms=t_s,
    )


def end_run(run_id: int) -> None:
    Run.objects.filter(pk=run_id).update(
        status=Run.Status.SUCCEEDED,
        verdict="exact",
        unique=1000,
        duplicates=0,
        lost=0,
        summary={"verdict": "exact", "unique": 1000},
    )


def staff_cookie(client, django_user_model, *, staff: bool = True) -> tuple[bytes, bytes]:
    user = django_user_model.objects.create_user(f"u-{uuid.uuid4().hex[:8]}", password="x" * 12, is_staff=staff)
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


def socket(path: str, *headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=list(headers))


async def receive_until(communicator: WebsocketCommunicator, done, *, timeout_s: float = 10.0) -> list[dict]:
    """Messages until ``done(messages)`` is true; fails after ``timeout_s``."""
    messages: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while not done(messages):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; got {messages}"
        messages.append(await communicator.receive_json_from(timeout=left))
    return messages


def t_s_of(messages: list[dict]) -> list[float]:
    return [t for m in messages for t in (m.get("columns") or {}).get("t_s", [])]


def has_t_s(t_s: float):
    return lambda messages: t_s in t_s_of(messages)


def ended(messages: list[dict]) -> bool:
    return bool(messages) and bool((messages[-1].get("run") or {}).get("ended"))


# -- who may connect ---------------------------------------------------------------------------


def test_anonymous_non_staff_and_foreign_origins_are_refused(client, django_user_model):
    run = make_run("live-refused")
    add_sample(run.pk, 1.0)
    path = f"/ws/runs/{run.pk}/"
    not_staff = staff_cookie(client, django_user_model, staff=False)
    staff = staff_cookie(client, django_user_model)

    async def scenario():
        results = {}
        for name, communicator in {
            "anonymous run": socket(path, ORIGIN),
            "anonymous overview": socket("/ws/runs/", ORIGIN),
            "non-staff run": socket(path, ORIGIN, not_staff),
            "non-staff overview": socket("/ws/runs/", ORIGIN, not_staff),
            "staff, foreign origin": socket(path, (b"origin", b"http://evil.example"), staff),
            "staff, no origin": socket(path, staff),
        }.items():
            connected, _ = await communicator.connect(timeout=5)
            results[name] = connected
            if not connected:
                assert await communicator.receive_nothing(timeout=0.1)  # no data, ever
            await communicator.disconnect()
        ok = socket(path, ORIGIN, staff)
        results["staff"], _ = await ok.connect(timeout=5)
        first = await ok.receive_json_from(timeout=5)
        await ok.disconnect()
        return results, first

    results, first = async_to_sync(scenario)()
    assert results == {
        "anonymous run": False,
        "anonymous overview": False,
        "non-staff run": False,
        "non-staff overview": False,
        "staff, foreign origin": False,
        "staff, no origin": False,
        "staff": True,
    }
    assert first["columns"]["t_s"] == [1.0] and first["run"]["status"] == "running"


def test_the_pages_and_controls_are_staff_only_and_csrf_protected(client, django_user_model):
    run = make_run("live-pages")
    pages = [reverse("dashboard:overview"), reverse("dashboard:run", args=[run.pk])]
    for url in pages:
        assert client.get(url).status_code == 302  # to the login page
    staff = django_user_model.objects.create_user("live-staff", password="x" * 12, is_staff=True)
    # the controls' permissions (experiments/permissions.py; without them: test_control_permissions.py)
    staff.user_permissions.set(
        Permission.objects.filter(content_type__app_label="experiments", codename__in=("add_run", "change_run"))
    )
    client.force_login(staff)
    overview, page = (client.get(url) for url in pages)
    assert overview.status_code == 200 and b'id="runs"' in overview.content
    for element_id in (
        b'id="status"',
        b'id="verdict"',
        b'id="consumed"',
        b'id="progress"',
        b'id="charts"',
        b'id="cancel"',
        b'id="launch-again"',
        b'data-state="loading"',
        b"live.js",
    ):
        assert element_id in page.content, element_id

    csrf_client = type(client)(enforce_csrf_checks=True)
    csrf_client.force_login(django_user_model.objects.get(username="live-staff"))
    assert csrf_client.post(reverse("dashboard:run_cancel", args=[run.pk])).status_code == 403
    assert Run.objects.get(pk=run.pk).status == Run.Status.RUNNING

    cancelled = client.post(reverse("dashboard:run_cancel", args=[run.pk]))
    assert cancelled.url == reverse("dashboard:run", args=[run.pk])
    assert Run.objects.get(pk=run.pk).status == Run.Status.CANCELLED
    again = client.post(reverse("dashboard:run_launch_again", args=[run.pk]))
    new_run = Run.objects.filter(experiment=run.experiment).exclude(pk=run.pk).get()
    assert again.url == reverse("dashboard:run", args=[new_run.pk]) and new_run.status == Run.Status.QUEUED


# -- history, live, resume (embedded path: the follower) ----------------------------------------


def test_a_late_joiner_gets_the_history_first_then_live_samples_then_the_end(client, django_user_model):
    run = make_run("live-late")
    for t_s in (1.0, 2.0, 3.0):
        add_sample(run.pk, t_s)
    staff = staff_cookie(client, django_user_model)

    async def scenario():
        ws = socket(f"/ws/runs/{run.pk}/", ORIGIN, staff)
        assert (await ws.connect(timeout=5))[0]
        history = await receive_until(ws, has_t_s(3.0))
        for t_s in (4.0, 5.0):
            await database_sync_to_async(add_sample)(run.pk, t_s)
            history += await receive_until(ws, has_t_s(t_s))
        await database_sync_to_async(end_run)(run.pk)
        history += await receive_until(ws, ended)
        await ws.disconnect()
        return history

    messages = async_to_sync(scenario)()
    assert t_s_of(messages[:1]) == [1.0, 2.0, 3.0]  # the whole history, in order, in the first message
    assert t_s_of(messages) == [1.0, 2.0, 3.0, 4.0, 5.0]
    final = messages[-1]["run"]
    assert final["status"] == "succeeded" and final["verdict"] == "exact" and final["summary"]["verdict"] == "exact"
    assert final["ledger"] == {"unique": 1000, "duplicates": 0, "lost": 0} and final["progress"] == 1.0


def test_a_reconnect_with_after_resumes_without_gaps_or_repeats(client, django_user_model):
    run = make_run("live-resume")
    for t_s in (1.0, 2.0, 3.0):
        add_sample(run.pk, t_s)
    staff = staff_cookie(client, django_user_model)

    async def scenario():
        first = socket(f"/ws/runs/{run.pk}/", ORIGIN, staff)
        assert (await first.connect(timeout=5))[0]
        got = await receive_until(first, has_t_s(3.0))
        await first.disconnect()  # the connection drops; samples go on meanwhile
        for t_s in (4.0, 5.0):
            await database_sync_to_async(add_sample)(run.pk, t_s)
        last = t_s_of(got)[-1]
        again = socket(f"/ws/runs/{run.pk}/?after={last}", ORIGIN, staff)
        assert (await again.connect(timeout=5))[0]
        got += await receive_until(again, has_t_s(5.0))
        await database_sync_to_async(add_sample)(run.pk, 6.0)
        await database_sync_to_async(end_run)(run.pk)
        got += await receive_until(again, ended)
        await again.disconnect()
        return got

    got = t_s_of(async_to_sync(scenario)())
    stored = list(Sample.objects.filter(run=run).order_by("t_s").values_list("t_s", flat=True))
    assert got == stored == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_viewers_of_one_run_share_one_database_read_per_interval_and_get_at_most_two_messages_a_second(
    client, django_user_model
):
    run = make_run("live-shared")
    add_sample(run.pk, 1.0)
    staff = staff_cookie(client, django_user_model)
    viewers = 6

    async def scenario():
        sockets = [socket(f"/ws/runs/{run.pk}/", ORIGIN, staff) for _ in range(viewers)]
        started = time.monotonic()
        for ws in sockets:
            assert (await ws.connect(timeout=5))[0]
        received = [await receive_until(ws, has_t_s(1.0)) for ws in sockets]
        for t_s in (2.0, 3.0, 4.0):
            await database_sync_to_async(add_sample)(run.pk, t_s)
            for i, ws in enumerate(sockets):
                received[i] += await receive_until(ws, has_t_s(t_s))
        elapsed_s = time.monotonic() - started
        followers = [f for (_, run_id), f in live._run_followers.items() if run_id == run.pk]
        reads = followers[0].reads
        for ws in sockets:
            await ws.disconnect()
        return elapsed_s, len(followers), reads, received

    elapsed_s, followers, reads, received = async_to_sync(scenario)()
    intervals = elapsed_s / live.FOLLOW_INTERVAL_S
    assert followers == 1
    # one read per interval for all six viewers (six per interval if each read for itself)
    assert 1 <= reads <= intervals + 2, (reads, intervals)
    for messages in received:
        assert t_s_of(messages) == [1.0, 2.0, 3.0, 4.0]
        assert len(messages) <= elapsed_s / live.MIN_SEND_INTERVAL_S + 1
    assert not [k for k in live._run_followers if k[1] == run.pk]  # dropped with its last viewer


def test_the_outbox_sends_at_most_two_messages_a_second_whatever_the_rate():
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def scenario():
        import asyncio

        outbox = live.Outbox(send)
        started = time.monotonic()
        for i in range(1, 301):  # 300 samples over ~1.5 s: 200 a second
            outbox.put({"status": "running", "i": i}, {"t_s": [float(i)], "consume_eps": [1.0]})
            outbox.put(None, {"t_s": [float(i)], "consume_eps": [1.0]})  # a repeat: dropped
            await asyncio.sleep(0.005)
        while outbox.flushing is not None:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0)
        return time.monotonic() - started

    elapsed_s = async_to_sync(scenario)()
    assert [t for m in sent for t in m["columns"]["t_s"]] == [float(i) for i in range(1, 301)]
    assert len(sent) <= elapsed_s / live.MIN_SEND_INTERVAL_S + 1
    assert sent[-1]["run"]["i"] == 300


def test_the_overview_lists_running_then_recent_runs_live(client, django_user_model):
    running = make_run("live-overview-running")
    add_sample(running.pk, 2.0)
    done = make_run("live-overview-done", status=Run.Status.SUCCEEDED)
    Run.objects.filter(pk=done.pk).update(verdict="exact", throughput_eps=1234.0, latency_p99_ms=5.0)
    staff = staff_cookie(client, django_user_model)

    async def scenario():
        ws = socket("/ws/runs/", ORIGIN, staff)
        assert (await ws.connect(timeout=5))[0]
        first = await ws.receive_json_from(timeout=5)
        await database_sync_to_async(end_run)(running.pk)
        changed = await receive_until(ws, lambda ms: ms and ms[-1]["runs"][0]["status"] == "succeeded")
        await ws.disconnect()
        return first, changed[-1]

    first, changed = async_to_sync(scenario)()
    rows = {r["id"]: r for r in first["runs"]}
    assert first["runs"][0]["id"] == running.pk  # in flight first
    assert rows[running.pk]["progress"] == 0.2 and rows[running.pk]["events_s"] == 100.0
    assert rows[done.pk] == {
        "id": done.pk,
        "experiment": done.experiment.name,
        "backend": "memory",
        "status": "succeeded",
        "progress": 1.0,
        "events_s": 1234.0,
        "p99_ms": 5.0,
        "verdict": "exact",
    }
    assert changed["runs"][0]["verdict"] == "exact"


# -- the Redis path ------------------------------------------------------------------------------


def redis_layers() -> dict:
    import redis

    url = os.environ.get("IMQ_CHANNEL_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        unavailable(f"redis for the channel layer not reachable at {url}: {exc}")
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [url],
                "prefix": f"imqtest-live-{uuid.uuid4().hex[:8]}",
                "group_expiry": 86400,
                "capacity": 1000,
            },
        }
    }


def test_redis_path_published_samples_reach_a_connected_viewer_with_gaps_filled(client, django_user_model):
    from experiments.services.runs import _run_end

    layers = redis_layers()
    run = make_run("live-redis")
    add_sample(run.pk, 1.0)
    staff = staff_cookie(client, django_user_model)

    def publish(t_s: float, *, stored_only: bool = False) -> None:
        sample = add_sample(run.pk, t_s)
        if not stored_only:
            publisher.sample_published(run=run, sample=sample)
        publisher._publisher.flush()

    with override_settings(CHANNEL_LAYERS=layers):
        assert live.uses_channel_layer()

        async def scenario():
            ws = socket(f"/ws/runs/{run.pk}/", ORIGIN, staff)
            assert (await ws.connect(timeout=5))[0]
            got = await receive_until(ws, has_t_s(1.0))  # the history, read after joining
            await database_sync_to_async(publish)(2.0)
            got += await receive_until(ws, has_t_s(2.0))
            # 3.0 is stored but its message is lost: 4.0 names it as the one before, so the
            # viewer reads it from the database
            await database_sync_to_async(publish)(3.0, stored_only=True)
            publisher._last_t_s[run.pk] = 3.0
            await database_sync_to_async(publish)(4.0)
            got += await receive_until(ws, has_t_s(4.0))
            await database_sync_to_async(_end)()
            got += await receive_until(ws, ended)
            await ws.disconnect()
            return got

        def _end():
            Run.objects.filter(pk=run.pk).update(status=Run.Status.CANCELLED)
            _run_end(run=run, status=Run.Status.FAILED, error="", fields={})  # publishes the end

        messages = async_to_sync(scenario)()
    assert t_s_of(messages) == [1.0, 2.0, 3.0, 4.0]
    assert messages[-1]["run"]["status"] == "cancelled" and messages[-1]["run"]["ended"]
    assert publisher._publisher.loop is None  # the run's end closed its loop and connections
    assert publisher._publisher.failed == 0


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_the_publisher_reuses_one_loop_and_connection_over_a_thousand_publishes():
    layers = redis_layers()
    with override_settings(CHANNEL_LAYERS=layers):
        pub = publisher.Publisher()
        pub.publish("imqtest-warmup", {"type": "run.published"})
        pub.flush()
        loop, threads, fds = pub.loop, threading.active_count(), _open_fds()
        for i in range(1000):  # a run publishes about one a second: never 200 waiting at once
            pub.publish(f"run-test-{i % 3}", {"type": "run.published", "i": i})
            if i % 100 == 99:
                pub.flush(timeout_s=30)
        assert pub.loop is loop and threading.active_count() == threads
        assert _open_fds() <= fds + 1  # no socket (connection) or loop selector per publish
        assert pub.published == 1001 and pub.failed == pub.dropped == 0
        thread = pub.thread
        pub.close()
        assert pub.loop is None and not thread.is_alive() and loop.is_closed()
        assert threading.active_count() == threads - 1


def test_the_live_state_reads_progress_without_a_query_for_the_publisher():
    spec = {"rate_eps": 100.0, "warmup_s": 1.0, "duration_s": 3.0}
    assert selectors.progress_of(spec=spec, status="running", t_s=2.0, unique=0) == 0.5
    assert selectors.progress_of(spec={"events": 1000}, status="running", t_s=9.0, unique=250) == 0.25
    assert selectors.progress_of(spec={}, status="running", t_s=1.0, unique=1) is None


def test_the_overview_shows_no_made_up_progress_for_a_run_that_ended_unfinished():
    run = make_run("live-cancelled")
    add_sample(run.pk, 1.0)
    Run.objects.filter(pk=run.pk).update(status="cancelled", finished_at=timezone.now())
    (row,) = [r for r in selectors.runs_overview() if r["id"] == run.pk]
    assert row["status"] == "cancelled" and row["progress"] is None
