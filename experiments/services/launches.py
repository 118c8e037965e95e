"""Writes of the control room: launch, sweep, clone, re-run, and a launched series' result.

A launch never executes anything in the request: it stores the runs as ``queued`` and, once the
transaction has committed (so the cluster can see the rows), hands each to django-q2
(``experiments.execution.tasks.run_task``). A cluster executes them one at a time in launch order; a
series of launched runs (repeat K, sweep) gets its result from ``series_refresh``, which the
executor calls after each of its runs ends. Keyword-only, ``<entity>_<action>``, as in
``services.py``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from experiments.models import Experiment, Run, RunSeries
from experiments.selectors import run_json_summary
from experiments.services.runs import run_cancel, run_create
from experiments.services.series import series_end
from experiments.validation import SPEC_FIELDS, experiment_validate, spec_validate
from queues.backends import backend_class
from queues.errors import InvalidSpec, QueueError
from queues.measurement.spread import spread
from queues.run.launch import check_alias
from queues.workload.spec import WorkloadSpec

log = logging.getLogger(__name__)

MAX_REPEAT = 50
MAX_SWEEP_VALUES = 50
#: The spec fields a sweep may vary; a backend option is ``option:NAME``.
SWEEP_FIELDS = ("producers", "consumers", "batch", "events_per_message", "rate_eps")
TASK = "experiments.execution.tasks.run_task"


def experiment_launch(*, experiment: Experiment, repeat: int = 1) -> list[Run]:
    """Queue ``repeat`` runs of ``experiment`` as it is defined now (one run, or a repeat series
    of ``repeat`` runs whose result is their median and spread) and hand them to the cluster.
    Raises ``ValidationError`` (nothing stored) for a definition a run would reject."""
    if not isinstance(repeat, int) or not 1 <= repeat <= MAX_REPEAT:
        raise ValidationError(f"the repeat count must be a whole number from 1 to {MAX_REPEAT}, got {repeat!r}")
    spec = experiment_validate(experiment=experiment)
    with transaction.atomic():
        series = RunSeries.objects.create(experiment=experiment, kind=RunSeries.Kind.REPEAT) if repeat > 1 else None
        return [
            run_launch(experiment=experiment, spec=spec, options=experiment.options, series=series)
            for _ in range(repeat)
        ]


def run_launch(
    *, experiment: Experiment, spec: WorkloadSpec, options: Mapping[str, Any] | None, series: RunSeries | None = None
) -> Run:
    """A queued run of a validated ``spec``, handed to the cluster when the transaction commits."""
    run = run_create(experiment=experiment, spec=spec, options=options, series=series)
    transaction.on_commit(partial(run_enqueue, run_id=run.pk))
    return run


def run_enqueue(*, run_id: int) -> None:
    """Give run ``run_id`` to django-q2. A broker that refuses it fails the run at once, with
    what to do, instead of leaving it queued for ever."""
    try:
        async_task(TASK, run_id, task_name=f"imqueue run {run_id}", group="imqueue-runs")
    except Exception as exc:  # noqa: BLE001 - any broker error: the run must not stay queued
        error = (
            f"could not hand the run to the django-q2 cluster: {type(exc).__name__}: {exc}; "
            "check the Q_CLUSTER broker settings and launch it again"
        )
        log.error("run %s: %s", run_id, error)
        Run.objects.filter(pk=run_id, status=Run.Status.QUEUED).update(
            status=Run.Status.FAILED, error=error, finished_at=timezone.now()
        )


def run_rerun(*, run: Run) -> Run:
    """Launch the spec ``run`` ran (its own copy, not the experiment's current definition)
    again, as a new run of the same experiment. Raises ``ValidationError`` if it no longer
    validates (a backend or option since removed)."""
    values = {k: v for k, v in run.spec.items() if k in SPEC_FIELDS}
    spec = _validated(values=values, options=run.spec.get("options") or {})
    with transaction.atomic():
        return run_launch(experiment=run.experiment, spec=spec, options=run.spec.get("options") or {})


def experiment_clone(*, experiment: Experiment) -> Experiment:
    """A copy of ``experiment``'s definition under a new name ("<name> (copy)", "(copy 2)"...),
    without its runs."""
    base = re.sub(r" \(copy(?: \d+)?\)$", "", experiment.name)
    taken = set(Experiment.objects.filter(name__startswith=base).values_list("name", flat=True))
    name = next(
        n for n in (f"{base} (copy)", *(f"{base} (copy {i})" for i in range(2, len(taken) + 3))) if n not in taken
    )
    copy = Experiment(
        name=name,
        notes=experiment.notes,
        options=dict(experiment.options or {}),
        **{f: getattr(experiment, f) for f in SPEC_FIELDS},
    )
    copy.save()
    return copy


def sweep_knobs(*, backend: str) -> list[str]:
    """What a sweep of an experiment on ``backend`` may vary: the spec fields, then
    ``option:NAME`` for each option the backend declares."""
    knobs = list(SWEEP_FIELDS)
    if check_alias(backend) == "backend":
        knobs += [f"option:{option.name}" for option in backend_class(backend).options]
    return knobs


def sweep_values_parse(*, text: str) -> list[Any]:
    """``"1, 2, 4, 8"`` -> ``[1, 2, 4, 8]``: numbers where they read as numbers, text otherwise."""
    values: list[Any] = []
    for item in (part.strip() for part in text.replace(";", ",").split(",")):
        if not item:
            continue
        for kind in (int, float):
            try:
                values.append(kind(item))
                break
            except ValueError:
                continue
        else:
            values.append(item)
    return values


def series_launch_sweep(*, experiment: Experiment, knob: str, values: Sequence[Any]) -> RunSeries:
    """A sweep: one queued run of ``experiment`` per value of ``knob`` (a field of
    ``SWEEP_FIELDS`` or ``option:NAME``), executed one after another in the order given, stored
    as one series. Every value is validated before anything is stored: ``ValidationError``
    names the first that a run would reject."""
    experiment_validate(experiment=experiment)
    values = list(values)
    if not 1 <= len(values) <= MAX_SWEEP_VALUES:
        raise ValidationError(f"a sweep takes 1 to {MAX_SWEEP_VALUES} values, e.g. 1, 2, 4, 8; got {len(values)}")
    if knob not in sweep_knobs(backend=experiment.backend):
        raise ValidationError(
            f"cannot sweep {knob!r} on {experiment.backend}; "
            f"choose one of {', '.join(sweep_knobs(backend=experiment.backend))}"
        )
    steps = []
    for value in values:
        spec_values = {f: getattr(experiment, f) for f in SPEC_FIELDS}
        options = dict(experiment.options or {})
        if knob.startswith("option:"):
            options[knob.removeprefix("option:")] = value
        else:
            spec_values[knob] = value
        try:
            steps.append((_validated(values=spec_values, options=options), options))
        except ValidationError as exc:
            raise ValidationError(f"{knob} = {value!r}: {' '.join(exc.messages)}") from None
    with transaction.atomic():
        series = RunSeries.objects.create(experiment=experiment, kind=RunSeries.Kind.SWEEP, knob=knob, values=values)
        for spec, options in steps:
            run_launch(experiment=experiment, spec=spec, options=options, series=series)
    return series


def _validated(*, values: Mapping[str, Any], options: Mapping[str, Any]) -> WorkloadSpec:
    try:
        return spec_validate(values=values, options=options)
    except (InvalidSpec, QueueError) as exc:
        raise ValidationError(str(exc)) from None


def series_refresh(*, series: RunSeries) -> RunSeries:
    """Bring a launched series' result up to date with its runs; end it once none is in flight.

    A run of the series that did not succeed stops it: its queued runs are cancelled, and the
    series ends with that run's status. Idempotent: call it whenever one of its runs ended."""
    runs = list(series.runs.order_by("pk"))
    stopped = next((r for r in runs if r.finished_at and r.status != Run.Status.SUCCEEDED), None)
    if stopped is not None:
        queued = [r.pk for r in runs if r.status == Run.Status.QUEUED]
        Run.objects.filter(pk__in=queued, status=Run.Status.QUEUED).update(
            status=Run.Status.CANCELLED,
            finished_at=timezone.now(),
            error=f"not started: run {stopped.pk} of its series {stopped.status}",
        )
        runs = list(series.runs.order_by("pk"))
    result = _series_result(series=series, runs=runs)
    if any(r.status in (Run.Status.QUEUED, Run.Status.RUNNING) for r in runs):
        RunSeries.objects.filter(pk=series.pk).update(result=result)
        series.refresh_from_db()
        return series
    return series_end(
        series=series,
        status=stopped.status if stopped else RunSeries.Status.SUCCEEDED,
        error=f"run {stopped.pk} {stopped.status}: {stopped.error}" if stopped else "",
        result=result,
    )


def _series_result(*, series: RunSeries, runs: list[Run]) -> dict[str, Any]:
    summaries = [run_json_summary(run=r) for r in runs]
    result: dict[str, Any] = {"series_id": series.pk, "runs": summaries}
    if series.kind == RunSeries.Kind.SWEEP:
        result.update(
            knob=series.knob, points=[_sweep_point(value, run) for value, run in zip(series.values, runs, strict=False)]
        )
    succeeded = [s for s in summaries if s["status"] == Run.Status.SUCCEEDED]
    if succeeded:
        result.update(spread(succeeded))
    return result


def _sweep_point(value: Any, run: Run) -> dict[str, Any]:
    """One value of a sweep and the figures its run measured (``None`` while it has none)."""
    return {
        "value": value,
        "run_id": run.pk,
        "status": run.status,
        "verdict": run.verdict or None,
        "throughput_eps": run.throughput_eps,
        "p50_ms": run.latency_p50_ms,
        "p99_ms": run.latency_p99_ms,
        "consume_eps": (run.summary or {}).get("consume_eps"),
        "lost": run.lost,
        "duplicates": run.duplicates,
    }


def run_stop(*, run: Run) -> tuple[bool, str]:
    """Cancel ``run`` for a user: ``(True, what happens next)``, or ``(False, why nothing
    happened)`` for a run that already ended (which is left unchanged). A queued run never
    starts; a running one is stopped by its executor within a second or two and stored as
    cancelled with everything counted so far."""
    run.refresh_from_db(fields=["status"])
    was = run.status
    if not run_cancel(run=run):
        run.refresh_from_db()
        return False, f"run {run.pk} is {run.status}: only a queued or running run can be cancelled; nothing changed"
    if run.series_id:
        series_refresh(series=run.series)
    if was == Run.Status.QUEUED:
        return True, f"run {run.pk} cancelled: it will not start"
    return True, f"run {run.pk} is being cancelled: its executor stops it within 2 s and stores what it counted"
