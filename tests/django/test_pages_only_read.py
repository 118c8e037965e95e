"""A page only reads: a GET of any admin page or live page, with a stale run present (its
executor died), issues no INSERT, UPDATE or DELETE and shows the run as stored. The stale run is
marked failed by what runs anyway: the executor's start (``executerun``, and the cluster's task
before it), the ``cleanup`` command and the cluster's schedule (a ``Schedule`` row made by a
data migration)."""

from __future__ import annotations

import importlib
import io
import socket
import subprocess
import types
from datetime import timedelta

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.models import Schedule

from experiments.execution import tasks
from experiments.models import Experiment, Host, Run, RunSeries, Sample
from experiments.services import launches
from experiments.services.cleanup import STALE_ERROR

pytestmark = pytest.mark.django_db

WRITES = ("insert", "update", "delete")
SCHEDULE_MIGRATION = "experiments.migrations.0011_stale_runs_schedule"


def reaped_pid() -> int:
    """A pid whose process has ended: no executor answers to it."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def stale_run(experiment: Experiment, series: RunSeries | None = None) -> Run:
    """A run left ``running`` by an executor of this host that died an hour ago: stale by its
    pid and by its heartbeat alike."""
    an_hour_ago = timezone.now() - timedelta(hours=1)
    run = Run.objects.create(
        experiment=experiment,
        series=series,
        backend=experiment.backend,
        spec={"backend": experiment.backend, "events": 1000},
        status=Run.Status.RUNNING,
        started_at=an_hour_ago,
        heartbeat_at=an_hour_ago,
        executor_host=socket.gethostname(),
        executor_pid=reaped_pid(),
    )
    Sample.objects.create(
        run=run,
        t_s=1.0,
        produced=10,
        consumed=10,
        unique=10,
        produce_eps=10.0,
        consume_eps=10.0,
        depth=0,
        backlog=0,
        p99_ms=1.0,
    )
    return run


def stored(run: Run) -> tuple:
    return Run.objects.filter(pk=run.pk).values_list("status", "error", "finished_at").get()


def admin_url(name: str, *args: object) -> str:
    return reverse(f"admin:experiments_{name}", args=args)


def get_writing_nothing(client, url: str) -> None:
    """GET ``url`` (reading a streamed body to its end), asserting it wrote nothing."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
        body = b"".join(response.streaming_content) if response.streaming else response.content
    assert response.status_code == 302 or (response.status_code == 200 and body), (url, response.status_code)
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().lower().startswith(WRITES)]
    assert not writes, (url, writes)


def test_no_page_writes_and_a_stale_run_stays_as_stored(admin_client):
    experiment = Experiment.objects.create(name="read-only-pages", backend="memory")
    series = RunSeries.objects.create(experiment=experiment, kind=RunSeries.Kind.REPEAT)
    run = stale_run(experiment, series)
    other = Run.objects.create(
        experiment=experiment,
        backend="memory",
        spec={"backend": "memory"},
        status=Run.Status.SUCCEEDED,
        finished_at=timezone.now(),
    )
    Host.objects.create(name="read-only-host", last_seen=timezone.now())
    before = stored(run)
    pages = [
        admin_url("experiment_changelist"),
        admin_url("experiment_change", experiment.pk),
        admin_url("experiment_add"),
        admin_url("run_changelist"),
        admin_url("run_change", run.pk),
        admin_url("runseries_changelist"),
        admin_url("runseries_change", series.pk),
        admin_url("runseries_scorecard"),
        f"{admin_url('run_compare')}?ids={run.pk},{other.pk}",
        f"{admin_url('run_export')}?ids={run.pk}&format=csv",
        f"{admin_url('run_export')}?ids={run.pk}&format=json",
        admin_url("host_changelist"),
        reverse("dashboard:overview"),
        reverse("dashboard:run", args=[run.pk]),
        reverse("experiments:run_samples", args=[run.pk]),
    ]
    for page in pages:
        get_writing_nothing(admin_client, page)
    assert stored(run) == before and before[0] == Run.Status.RUNNING
    page = admin_client.get(admin_url("run_change", run.pk)).content.decode()
    assert f"run {run.pk} of read-only-pages (running) | View run" in page  # as stored


def test_the_cluster_task_marks_a_stale_run_before_it_executes_one(monkeypatch):
    run = stale_run(Experiment.objects.create(name="stale-before-task", backend="memory"))
    seen = []

    def executor(command, **kwargs):  # the executor process: what it sees when it starts
        seen.append(stored(run)[0])
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(tasks.subprocess, "run", executor)
    tasks.run_task(run.pk + 1000)  # no such run: only the sweep before it matters here
    assert seen == [Run.Status.FAILED]


def test_executerun_marks_a_stale_run_when_it_starts():
    experiment = Experiment.objects.create(name="stale-before-executerun", backend="memory-mp", events=1000)
    run = stale_run(experiment)
    (queued,) = launches.experiment_launch(experiment=experiment)  # its django-q2 task is never sent
    call_command("executerun", str(queued.pk), stdout=io.StringIO())
    assert stored(run)[:2] == (Run.Status.FAILED, STALE_ERROR)
    assert Run.objects.get(pk=queued.pk).status == Run.Status.SUCCEEDED


def test_the_cleanup_command_marks_a_stale_run():
    run = stale_run(Experiment.objects.create(name="stale-cleanup", backend="redis-list"))
    out = io.StringIO()
    call_command("cleanup", "--backend", "redis-list", stdout=out)
    assert stored(run)[:2] == (Run.Status.FAILED, STALE_ERROR)
    assert f"run {run.pk}: mark failed" in out.getvalue()


def test_the_clusters_schedule_sweeps_every_minute_and_its_migration_runs_again_harmlessly():
    migration = importlib.import_module(SCHEDULE_MIGRATION)
    schema_editor = types.SimpleNamespace(connection=connection)
    migration.schedule_create(apps, schema_editor)  # again, after the test database's migrate
    (schedule,) = Schedule.objects.filter(name=migration.NAME)
    assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == (Schedule.MINUTES, 1, -1)
    assert schedule.cluster is None  # the default cluster's, never a load host's
    sweep = import_string(schedule.func)
    assert sweep is tasks.stale_runs_task
    run = stale_run(Experiment.objects.create(name="stale-schedule", backend="memory"))
    assert sweep() == f"marked failed: runs {run.pk}"
    assert stored(run)[0] == Run.Status.FAILED and sweep() == "no stale run"
