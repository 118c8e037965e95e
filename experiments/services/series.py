"""Writes of series: a spec run several times (``series_repeat``), a saturation search
(``series_find_max``), a series' cancel and its stored result. Each run of a series is a run
like any other, executed by ``runs.run_execute``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from experiments.models import Run, RunSeries
from experiments.selectors import run_json_summary, series_is_cancelled
from experiments.services.runs import experiment_get_or_create, run_cancel, run_execute, run_prepare
from queues.measurement.saturation import CurvePoint, find_max_rate
from queues.measurement.spread import spread
from queues.workload.spec import WorkloadSpec


def series_repeat(
    *,
    spec: WorkloadSpec,
    experiment_name: str,
    repeat: int,
    options: Mapping[str, Any] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    interrupted: Callable[[], str | None] | None = None,
) -> RunSeries:
    """Run ``spec`` ``repeat`` times, each stored as a run; store their median and spread.
    A run that does not succeed, or a cancel of the series (or ``interrupted``, see
    ``run_execute``), stops it."""
    experiment = experiment_get_or_create(name=experiment_name, spec=spec, options=options)
    series = RunSeries.objects.create(experiment=experiment, kind=RunSeries.Kind.REPEAT)
    runs: list[Run] = []
    for _ in range(repeat):
        run = _series_next_run(series=series, spec=spec, experiment_name=experiment_name, options=options)
        runs.append(run_execute(run=run, on_progress=on_progress, interrupted=interrupted))
        if runs[-1].status != Run.Status.SUCCEEDED:
            break
    summaries = [run_json_summary(run=r) for r in runs]
    stopped = next((r for r in runs if r.status != Run.Status.SUCCEEDED), None)
    return series_end(
        series=series,
        status=stopped.status if stopped else RunSeries.Status.SUCCEEDED,
        error=f"run {stopped.pk} {stopped.status}: {stopped.error}" if stopped else "",
        result={"runs": summaries, **spread(summaries), "series_id": series.pk},
    )


class _SearchStopped(Exception):
    """A step of a saturation search did not succeed: the search ends there."""

    def __init__(self, run: Run) -> None:
        super().__init__(f"the step at {run.spec.get('rate_eps')} events/s (run {run.pk}) {run.status}: {run.error}")
        self.run = run


def series_find_max(
    *,
    spec: WorkloadSpec,
    experiment_name: str,
    slo_p99_ms: float,
    start_rate_eps: float,
    options: Mapping[str, Any] | None = None,
    on_step: Callable[[CurvePoint], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    interrupted: Callable[[], str | None] | None = None,
) -> RunSeries:
    """A saturation search (``queues.measurement.saturation``) stored as a series of kind find-max.

    Each step is a steady run of its own, executed by ``run_execute`` (its samples, its
    summary, cancellable). The series' result holds the curve (each point naming its step's
    run) sorted by rate and the highest good rate. A step that fails or is cancelled, or a
    cancel of the series, stops the search: the series takes that status and keeps the curve
    measured so far.
    """
    experiment = experiment_get_or_create(name=experiment_name, spec=spec, options=options)
    series = RunSeries.objects.create(experiment=experiment, kind=RunSeries.Kind.FIND_MAX)
    step_runs: list[int] = []
    curve: list[dict[str, Any]] = []

    def step(rate: float) -> dict[str, Any]:
        step_spec = WorkloadSpec.from_mapping({**spec.as_dict(), "rate_eps": rate})
        run = _series_next_run(series=series, spec=step_spec, experiment_name=experiment_name, options=options)
        run = run_execute(run=run, on_progress=on_progress, interrupted=interrupted)
        if run.status != Run.Status.SUCCEEDED:
            raise _SearchStopped(run)
        step_runs.append(run.pk)
        return run_json_summary(run=run)

    def record(point: CurvePoint) -> None:
        curve.append(
            {
                "rate_eps": point.rate_eps,
                "p99_ms": point.p99_ms,
                "kept_up": point.kept_up,
                "ok": point.ok,
                "run_id": step_runs[len(curve)],
            }
        )
        if on_step:
            on_step(point)

    status, error = RunSeries.Status.SUCCEEDED, ""
    try:
        find_max_rate(step, slo_p99_ms=slo_p99_ms, start_rate_eps=start_rate_eps, on_point=record)
    except _SearchStopped as stop:
        status, error = stop.run.status, str(stop)
    good = [p["rate_eps"] for p in curve if p["ok"]]
    return series_end(
        series=series,
        status=status,
        error=error,
        result={
            "series_id": series.pk,
            "backend": spec.backend,
            "slo_p99_ms": slo_p99_ms,
            "max_rate_eps": round(max(good), 1) if good else None,
            "curve": sorted(curve, key=lambda p: p["rate_eps"]),
        },
    )


def series_cancel(*, series: RunSeries) -> bool:
    """Stop a running series: no further run of it starts, and its queued or running run is
    cancelled (the runner notices within a second)."""
    updated = RunSeries.objects.filter(pk=series.pk, status=RunSeries.Status.RUNNING).update(
        status=RunSeries.Status.CANCELLED, error="cancelled by the user"
    )
    for run in series.runs.filter(status__in=[Run.Status.QUEUED, Run.Status.RUNNING]):
        run_cancel(run=run)
    return bool(updated)


def _series_next_run(
    *, series: RunSeries, spec: WorkloadSpec, experiment_name: str, options: Mapping[str, Any] | None
) -> Run:
    """The series' next run, queued; cancelled at once if the series was cancelled. (Created
    before the check: a ``series_cancel`` after the check finds it queued and cancels it.)"""
    run = run_prepare(spec=spec, experiment_name=experiment_name, options=options, series=series)
    if series_is_cancelled(series_id=series.pk):
        run_cancel(run=run)
    return run


def series_end(*, series: RunSeries, status: str, error: str, result: dict[str, Any]) -> RunSeries:
    """Store the series' result and status; a series cancelled meanwhile stays cancelled."""
    result = {**result, "status": status, "error": error or None}
    if not RunSeries.objects.filter(pk=series.pk, status=RunSeries.Status.RUNNING).update(
        status=status, error=error, result=result
    ):
        cancelled = RunSeries.objects.get(pk=series.pk)
        RunSeries.objects.filter(pk=series.pk).update(
            result={**result, "status": cancelled.status, "error": cancelled.error or None}
        )
    series.refresh_from_db()
    return series
