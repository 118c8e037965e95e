"""Launching through django-q2: queued runs and their tasks, series, sweeps, clones, re-runs,
cancels in each state, stale executors, and one run at a time per machine.

The executing side (a real ``qcluster``) is tested end to end in tests/integration/test_cluster.py;
here the run is executed in-process with ``executerun`` where a test needs it to end.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_q.models import OrmQ

from experiments.execution.run_lock import one_run_at_a_time
from experiments.models import Experiment, Run, RunSeries
from experiments.services import launches
from experiments.services.cleanup import SILENT_ERROR, runs_mark_stale
from experiments.services.runs import run_heartbeat

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment():
    return Experiment.objects.create(name="launch-me", backend="memory-mp", events=2_000)


def queued_tasks() -> list[int]:
    """The run ids of the tasks waiting in django-q2's ORM broker, in enqueue order."""
    return [task.task["args"][0] for task in OrmQ.objects.order_by("id")]


def test_a_launch_stores_queued_runs_and_enqueues_one_task_each_after_commit(
    experiment, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        runs = launches.experiment_launch(experiment=experiment, repeat=3)
    assert len(callbacks) == 3
    assert [r.status for r in runs] == ["queued"] * 3
    series = RunSeries.objects.get()
    assert series.kind == "repeat" and {r.series_id for r in runs} == {series.pk}
    assert queued_tasks() == [r.pk for r in runs]  # launch order
    assert all(r.backend == "memory-mp" and r.spec["events"] == 2_000 for r in runs)


def test_a_run_keeps_its_spec_when_the_experiment_is_edited_later(experiment, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        (run,) = launches.experiment_launch(experiment=experiment)
    Experiment.objects.filter(pk=experiment.pk).update(events=9_999, backend="memory")
    run.refresh_from_db()
    assert run.series_id is None and run.spec["events"] == 2_000 and run.backend == "memory-mp"


def test_an_invalid_experiment_or_repeat_count_launches_nothing(experiment):
    Experiment.objects.filter(pk=experiment.pk).update(producers=0)
    experiment.refresh_from_db()
    with pytest.raises(ValidationError) as error:
        launches.experiment_launch(experiment=experiment)
    assert "producers" in error.value.message_dict
    experiment.producers = 1
    with pytest.raises(ValidationError, match="from 1 to"):
        launches.experiment_launch(experiment=experiment, repeat=0)
    assert not Run.objects.exists() and not OrmQ.objects.exists()


def test_a_broker_that_refuses_the_task_fails_the_run_with_what_to_do(
    experiment, settings, django_capture_on_commit_callbacks
):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "orm": None, "redis": {"host": "127.0.0.1", "port": 1}}
    from django_q.brokers import get_broker
    from django_q.conf import Conf

    # django-q2 reads its settings once: point its configuration at a broker that is not there
    previous = (Conf.ORM, Conf.REDIS)
    Conf.ORM, Conf.REDIS = None, {"host": "127.0.0.1", "port": 1, "socket_connect_timeout": 1}
    try:
        assert type(get_broker()).__name__ == "Redis"
        with django_capture_on_commit_callbacks(execute=True):
            (run,) = launches.experiment_launch(experiment=experiment)
    finally:
        Conf.ORM, Conf.REDIS = previous
    run.refresh_from_db()
    assert run.status == "failed" and "could not hand the run to the django-q2 cluster" in run.error
    assert "launch it again" in run.error


def test_a_sweep_validates_every_value_first_and_stores_a_series_in_order(
    experiment, django_capture_on_commit_callbacks
):
    with pytest.raises(ValidationError, match="consumers = 0"):
        launches.series_launch_sweep(experiment=experiment, knob="consumers", values=[1, 0])
    with pytest.raises(ValidationError, match="cannot sweep 'colour'"):
        launches.series_launch_sweep(experiment=experiment, knob="colour", values=[1])
    with pytest.raises(ValidationError, match="cannot sweep 'option:batch_size' on memory-mp; choose one of"):
        launches.series_launch_sweep(experiment=experiment, knob="option:batch_size", values=[1])
    assert not Run.objects.exists() and not RunSeries.objects.exists()

    values = launches.sweep_values_parse(text="1, 2; 4,8")
    assert values == [1, 2, 4, 8]
    with django_capture_on_commit_callbacks(execute=True):
        series = launches.series_launch_sweep(experiment=experiment, knob="consumers", values=values)
    runs = list(series.runs.order_by("pk"))
    assert series.kind == "sweep" and series.knob == "consumers" and series.values == [1, 2, 4, 8]
    assert [r.spec["consumers"] for r in runs] == [1, 2, 4, 8]
    assert queued_tasks() == [r.pk for r in runs]


def test_a_sweep_of_a_backend_option_sets_it_on_each_run(django_capture_on_commit_callbacks):
    experiment = Experiment.objects.create(name="opt-sweep", backend="memory-mp", events=1_000)
    knob = next(k for k in launches.sweep_knobs(backend="memory-mp") if k.startswith("option:consume_cost_us"))
    with django_capture_on_commit_callbacks(execute=True):
        series = launches.series_launch_sweep(experiment=experiment, knob=knob, values=[0, 10])
    assert [r.spec["options"]["consume_cost_us"] for r in series.runs.order_by("pk")] == [0, 10]


def test_clone_copies_the_definition_under_a_free_name(experiment):
    first = launches.experiment_clone(experiment=experiment)
    second = launches.experiment_clone(experiment=first)
    assert (first.name, second.name) == ("launch-me (copy)", "launch-me (copy 2)")
    assert (second.events, second.backend, second.options) == (
        experiment.events,
        experiment.backend,
        experiment.options,
    )
    assert not second.runs.exists()


def test_rerun_launches_the_spec_the_run_ran(experiment, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        (run,) = launches.experiment_launch(experiment=experiment)
        Experiment.objects.filter(pk=experiment.pk).update(events=7_000)
        again = launches.run_rerun(run=run)
    assert again.pk != run.pk and again.spec == run.spec and again.status == "queued"
    assert queued_tasks() == [run.pk, again.pk]


def test_cancel_in_each_state(experiment, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        queued, running, done = launches.experiment_launch(experiment=experiment, repeat=3)
    Run.objects.filter(pk=running.pk).update(status="running")
    Run.objects.filter(pk=done.pk).update(status="succeeded", finished_at=timezone.now())
    stopped, message = launches.run_stop(run=queued)
    assert stopped and "will not start" in message
    stopped, message = launches.run_stop(run=running)
    assert stopped and "within 2 s" in message
    stopped, message = launches.run_stop(run=done)
    assert not stopped and "is succeeded" in message and "nothing changed" in message
    statuses = dict(Run.objects.values_list("pk", "status"))
    assert statuses == {queued.pk: "cancelled", running.pk: "cancelled", done.pk: "succeeded"}


def test_executerun_executes_a_queued_run_and_ends_its_series(experiment, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        first, second = launches.experiment_launch(experiment=experiment, repeat=2)
    for run in (first, second):
        call_command("executerun", str(run.pk))
    series = RunSeries.objects.get()
    assert series.status == "succeeded" and len(series.result["runs"]) == 2
    assert series.result["median"]["unique"] == 2_000
    with pytest.raises(CommandError, match="not queued"):
        call_command("executerun", str(first.pk))


def test_a_failed_run_stops_its_series_and_cancels_the_rest(experiment, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        series = launches.series_launch_sweep(experiment=experiment, knob="consumers", values=[1, 2, 3])
    first, second, third = series.runs.order_by("pk")
    Run.objects.filter(pk=first.pk).update(status="failed", error="server gone", finished_at=timezone.now())
    series = launches.series_refresh(series=series)
    assert series.status == "failed" and "server gone" in series.error
    assert set(series.runs.values_list("status", flat=True)) == {"failed", "cancelled"}
    assert [p["status"] for p in series.result["points"]] == ["failed", "cancelled", "cancelled"]


def test_a_running_run_whose_heartbeat_stopped_is_failed_with_the_reason(experiment, settings):
    settings.IMQ_STALE_AFTER_S = 60
    run = Run.objects.create(
        experiment=experiment,
        backend="memory-mp",
        status="running",
        started_at=timezone.now(),
        executor_host="another-host",
        executor_pid=1,
    )
    fresh = Run.objects.create(
        experiment=experiment,
        backend="memory-mp",
        status="running",
        started_at=timezone.now(),
        executor_host="another-host",
        executor_pid=1,
    )
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=90))
    assert run_heartbeat(run_id=fresh.pk)
    queued = Run.objects.create(experiment=experiment, backend="memory-mp")
    assert runs_mark_stale() == [run.pk]
    run.refresh_from_db()
    assert run.status == "failed" and run.finished_at is not None
    assert run.error == SILENT_ERROR.format(seconds=90) or run.error.startswith(
        "executor stopped answering: no heartbeat for 9"
    )
    assert Run.objects.get(pk=fresh.pk).status == "running" and Run.objects.get(pk=queued.pk).status == "queued"
    assert not run_heartbeat(run_id=run.pk)  # a failed run's late executor learns it must stop


def test_the_machine_runs_one_run_at_a_time(settings, tmp_path):
    settings.IMQ_RUN_LOCK_PATH = str(tmp_path / "runs.lock")
    order, waited = [], threading.Event()

    def second():
        with one_run_at_a_time(on_wait=waited.set):
            order.append("second")

    with one_run_at_a_time():
        thread = threading.Thread(target=second)
        thread.start()
        assert waited.wait(10), "the second run did not see the machine busy"
        time.sleep(0.05)  # a second run that ignored the lock would have appended by now
        order.append("first")
    thread.join(10)
    assert order == ["first", "second"]


def test_every_admin_action_is_also_a_command(experiment, django_capture_on_commit_callbacks, capsys):
    with django_capture_on_commit_callbacks(execute=True):
        call_command("launchrun", "launch-me", "--repeat", "2")
        (first, second) = Run.objects.order_by("pk")
        call_command("rerun", str(first.pk))
        call_command("cloneexperiment", "launch-me")
        call_command("sweep", "launch-me", "--knob", "batch", "--values", "1,10")
    out = capsys.readouterr().out
    assert "launched 2 run(s) of 'launch-me' as series" in out and f"run {first.pk}'s spec again" in out
    assert Experiment.objects.filter(name="launch-me (copy)").exists()
    assert queued_tasks() == list(Run.objects.order_by("pk").values_list("pk", flat=True))  # 2 + 1 + 2
    repeat = RunSeries.objects.get(kind="repeat")
    call_command("cancelseries", str(repeat.pk))
    assert set(repeat.runs.values_list("status", flat=True)) == {"cancelled"}
    with pytest.raises(CommandError, match="only a running series can be cancelled"):
        call_command("cancelseries", str(repeat.pk))
    call_command("cancelrun", str(Run.objects.filter(status="queued").first().pk))
    with pytest.raises(CommandError, match="only a queued or running run can be cancelled"):
        call_command("cancelrun", str(first.pk))
    with pytest.raises(CommandError, match="there is no experiment 'nope'"):
        call_command("launchrun", "nope")
    with pytest.raises(CommandError, match="cannot sweep 'launch-me': consumers = 0"):
        call_command("sweep", "launch-me", "--knob", "consumers", "--values", "0")
