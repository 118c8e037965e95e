"""Run states move only forward, and a saturation search goes through the same path as a run."""

import pytest

from experiments.models import Run, RunSeries
from experiments.services.runs import run_cancel, run_execute, run_prepare
from experiments.services.series import series_cancel, series_find_max
from queues.workload.spec import WorkloadSpec

SLOW = {"consume_cost_us": "1250"}  # memory-mp consumes at most 800 events/s


def prepare(options=None, **fields):
    spec = WorkloadSpec.from_mapping({"backend": "memory-mp", **fields})
    return run_prepare(spec=spec, experiment_name="svc", options=options)


@pytest.mark.django_db
def test_a_run_cancelled_while_queued_is_never_started():
    run = prepare(events=1_000)
    assert run_cancel(run=run)
    run = run_execute(run=run)
    assert run.status == "cancelled" and run.started_at is None and run.finished_at is not None
    assert run.summary == {} and not run.samples.exists()


@pytest.mark.django_db
def test_run_execute_on_a_run_that_is_not_queued_does_nothing():
    done = run_execute(run=prepare(events=1_000))
    assert done.status == "succeeded" and done.summary["verdict"] == "exact"
    samples = done.samples.count()
    again = run_execute(run=Run.objects.get(pk=done.pk))
    assert (again.status, again.finished_at, again.summary) == (done.status, done.finished_at, done.summary)
    assert again.samples.count() == samples

    running = prepare(events=1_000)
    Run.objects.filter(pk=running.pk).update(status="running")  # as if another worker had it
    running = run_execute(run=running)
    assert running.status == "running" and running.started_at is None and not running.samples.exists()


@pytest.mark.django_db
def test_a_cancel_while_running_is_stored_cancelled_with_its_counts():
    run = prepare(options=SLOW, events=50_000, batch=10)

    def cancel_midway(done, total):
        if done >= 200:
            run_cancel(run=run)

    run = run_execute(run=run, on_progress=cancel_midway)
    assert run.status == "cancelled" and run.error == "cancelled by the user"
    assert run.started_at is not None and run.finished_at is not None
    assert 200 <= run.unique < 50_000 and run.summary["unique"] == run.unique
    assert run.summary["status"] == "cancelled" and run.samples.exists()


def find_max(**kwargs):
    spec = WorkloadSpec.from_mapping({"backend": "memory-mp", "rate_eps": 400, "duration_s": 1})
    return series_find_max(spec=spec, experiment_name="svc", slo_p99_ms=100, start_rate_eps=400, options=SLOW, **kwargs)


@pytest.mark.django_db
def test_cancelling_the_series_between_steps_stops_the_search():
    def cancel_after_the_first_step(point):
        series_cancel(series=RunSeries.objects.get())

    series = find_max(on_step=cancel_after_the_first_step)
    assert series.status == "cancelled" and series.result["status"] == "cancelled"
    first, second = series.runs.order_by("pk")
    assert first.status == "succeeded" and first.samples.exists()
    assert second.status == "cancelled" and second.started_at is None  # never started
    (point,) = series.result["curve"]
    assert point["run_id"] == first.pk and point["rate_eps"] == 400
    # whether 400/s passed depends on this machine's load: the result must agree with the curve
    assert series.result["max_rate_eps"] == (400 if point["ok"] else None)


@pytest.mark.django_db
def test_cancelling_the_running_step_stops_the_search():
    def cancel_the_step(done, total):
        if done >= 100 and (step := Run.objects.filter(status="running").first()):
            run_cancel(run=step)  # the runner's probe notices within a second

    series = find_max(on_progress=cancel_the_step)
    assert series.status == "cancelled" and "cancelled" in series.error
    (step,) = series.runs.all()
    assert step.status == "cancelled" and 100 <= step.unique < step.spec["events"]
    assert series.result["curve"] == [] and series.result["max_rate_eps"] is None
