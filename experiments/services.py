"""Writes: turn specs into rows, launch and record runs. Keyword-only, ``<entity>_<action>``.

Every run goes through ``run_execute``, whether the admin, a django-q2 worker or a management
command started it, so a run is stored the same way whoever launched it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from experiments.models import Experiment, Run, RunSeries, Sample
from experiments.selectors import run_is_cancelled
from queues import environment
from queues.errors import InvalidSpec, QueueError, UnknownBackend
from queues.launch import check_alias, resolve_options, run_spec
from queues.metrics import Sample as EngineSample
from queues.runner import Faults, RunResult
from queues.saturation import CurvePoint, find_max_rate
from queues.spread import spread
from queues.workload import WorkloadSpec

#: The spec's fields, each a field of ``Experiment`` too: ``WorkloadSpec`` is their one definition.
SPEC_FIELDS = tuple(f.name for f in fields(WorkloadSpec))
CANCEL_CHECK_S = 0.5


def spec_validate(*, values: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> WorkloadSpec:
    """A valid spec for ``values`` whose backend exists and takes ``options``, or
    ``InvalidSpec``/``UnknownBackend`` with a message that says what is allowed. No I/O."""
    spec = WorkloadSpec.from_mapping(values)
    options_validate(backend=spec.backend, options=options)
    if check_alias(spec.backend) == "approach":
        from queues.approaches import validate

        validate(spec)
    return spec


def options_validate(*, backend: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every option of ``backend`` with ``options`` applied, defaults filled in (what the run
    will record). Raises ``InvalidSpec`` for an unknown name or a value not allowed."""
    if options is not None and not isinstance(options, Mapping):
        raise InvalidSpec(f"options must be an object of NAME: VALUE, got {options!r}", field="options")
    return resolve_options(backend, options)


def experiment_validate(*, experiment: Experiment) -> WorkloadSpec:
    """``experiment``'s spec, validated as a run would validate it. Raises Django's
    ``ValidationError`` keyed by the field at fault where the error names one (for forms)."""
    try:
        return spec_validate(values={f: getattr(experiment, f) for f in SPEC_FIELDS}, options=experiment.options)
    except UnknownBackend as exc:
        raise ValidationError({"backend": str(exc)}) from None
    except InvalidSpec as exc:
        if exc.field in (*SPEC_FIELDS, "options"):
            raise ValidationError({exc.field: str(exc)}) from None
        raise ValidationError(str(exc)) from None
    except QueueError as exc:  # a backend whose driver is not installed
        raise ValidationError({"backend": str(exc)}) from None


def experiment_get_or_create(*, name: str, spec: WorkloadSpec, options: Mapping[str, Any] | None = None) -> Experiment:
    """The experiment called ``name``; a new one takes ``spec`` as its definition. An existing
    one keeps its definition: each run stores the spec it actually ran."""
    experiment, _ = Experiment.objects.get_or_create(
        name=name, defaults={**{f: getattr(spec, f) for f in SPEC_FIELDS}, "options": dict(options or {})}
    )
    return experiment


def run_create(*, experiment: Experiment, spec: WorkloadSpec, options: Mapping[str, Any] | None = None) -> Run:
    return Run.objects.create(experiment=experiment, spec={**spec.as_dict(), "options": dict(options or {})})


def run_execute(
    *, run: Run, on_progress: Callable[[int, int], None] | None = None, faults: Faults | None = None
) -> Run:
    """Run ``run`` to the end and store everything: samples as they come, then the result.

    A backend that cannot be reached, a worker that dies or a cancel ends the run as failed
    or cancelled with its error; what was counted until then is stored.
    """
    options = run.spec.get("options", {})
    spec = WorkloadSpec.from_mapping({k: v for k, v in run.spec.items() if k != "options"})
    run.status, run.started_at = Run.Status.RUNNING, timezone.now()
    run.save(update_fields=["status", "started_at"])
    try:
        result = run_spec(
            spec, run_id=f"r{run.pk}-{uuid.uuid4().hex[:6]}", urls=settings.IMQ_URLS, options=options,
            on_sample=lambda sample: sample_create(run=run, sample=sample),
            on_progress=on_progress, should_cancel=_cancel_probe(run.pk), faults=faults,
        )
    except QueueError as exc:
        return run_fail(run=run, error=str(exc))
    except BaseException as exc:
        run_fail(run=run, error=f"internal error: {type(exc).__name__}: {exc}")
        raise
    return run_finish(run=run, result=result)


def _cancel_probe(run_id: int) -> Callable[[], bool]:
    """A cheap ``should_cancel``: asks the database at most every ``CANCEL_CHECK_S``."""
    state = {"next": 0.0, "cancelled": False}

    def probe() -> bool:
        now = time.monotonic()
        if now >= state["next"]:
            state["next"] = now + CANCEL_CHECK_S
            state["cancelled"] = run_is_cancelled(run_id=run_id)
        return state["cancelled"]

    return probe


def sample_create(*, run: Run, sample: EngineSample) -> Sample:
    latency = sample.latency_ms or {}
    return Sample.objects.create(
        run=run, t_s=sample.t_s, produced=sample.produced, consumed=sample.consumed, unique=sample.unique,
        produce_eps=sample.produce_eps, consume_eps=sample.consume_eps, depth=sample.depth,
        backlog=sample.backlog, p50_ms=latency.get("p50"), p90_ms=latency.get("p90"),
        p99_ms=latency.get("p99"), p999_ms=latency.get("p999"), max_ms=latency.get("max"),
        offered_eps=sample.offered_eps, send_delay_p99_ms=sample.send_delay_p99_ms,
    )


def run_finish(*, run: Run, result: RunResult) -> Run:
    summary = dict(result.summary, run_id=run.pk, environment=result.environment)
    latency = summary.get("latency_ms") or {}
    run.status = result.status
    run.error = result.error or ""
    run.finished_at = timezone.now()
    run.environment = result.environment
    run.summary = summary
    run.verdict = summary["verdict"]
    run.duration_s = summary["duration_s"]
    run.throughput_eps = summary["throughput_eps"]
    run.latency_p50_ms, run.latency_p99_ms = latency.get("p50"), latency.get("p99")
    run.unique, run.duplicates, run.lost = summary["unique"], summary["duplicates"], summary["lost"]
    run.save()
    return run


def run_fail(*, run: Run, error: str) -> Run:
    run.status, run.error, run.finished_at = Run.Status.FAILED, error, timezone.now()
    if not run.environment:
        run.environment = environment.collect()
    run.save(update_fields=["status", "error", "finished_at", "environment"])
    return run


def run_cancel(*, run: Run) -> bool:
    """Ask a queued or running run to stop; the runner notices within a second."""
    updated = Run.objects.filter(pk=run.pk, status__in=[Run.Status.QUEUED, Run.Status.RUNNING]).update(
        status=Run.Status.CANCELLED
    )
    return bool(updated)


@transaction.atomic
def run_prepare(
    *, spec: WorkloadSpec, experiment_name: str, options: Mapping[str, Any] | None = None, series: RunSeries | None = None
) -> Run:
    """The experiment (created if missing) and a queued run of ``spec``, in one transaction."""
    experiment = experiment_get_or_create(name=experiment_name, spec=spec, options=options)
    run = run_create(experiment=experiment, spec=spec, options=options)
    if series is not None:
        run.series = series
        run.save(update_fields=["series"])
    return run


def series_repeat(
    *, spec: WorkloadSpec, experiment_name: str, repeat: int, options: Mapping[str, Any] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> RunSeries:
    """Run ``spec`` ``repeat`` times, each stored as a run; store their median and spread."""
    experiment = experiment_get_or_create(name=experiment_name, spec=spec, options=options)
    series = RunSeries.objects.create(experiment=experiment, kind=RunSeries.Kind.REPEAT)
    runs = []
    for _ in range(repeat):
        run = run_prepare(spec=spec, experiment_name=experiment_name, options=options, series=series)
        runs.append(run_execute(run=run, on_progress=on_progress))
        if runs[-1].status != Run.Status.SUCCEEDED:
            break
    summaries = [_public_summary(r) for r in runs]
    series.result = {"runs": summaries, **spread(summaries), "series_id": series.pk}
    series.save(update_fields=["result"])
    return series


def series_find_max(
    *, spec: WorkloadSpec, experiment_name: str, slo_p99_ms: float, start_rate_eps: float,
    options: Mapping[str, Any] | None = None, on_step: Callable[[CurvePoint], None] | None = None,
) -> Run:
    """A saturation search stored as one run whose samples are the curve (rate, p99, kept up)."""
    run = run_prepare(spec=spec, experiment_name=experiment_name, options=options)
    run.status, run.started_at = Run.Status.RUNNING, timezone.now()
    run.save(update_fields=["status", "started_at"])
    began = time.monotonic()

    def step(rate: float) -> dict[str, Any]:
        step_spec = WorkloadSpec.from_mapping({**spec.as_dict(), "rate_eps": rate})
        return run_spec(step_spec, run_id=f"r{run.pk}-{uuid.uuid4().hex[:6]}", urls=settings.IMQ_URLS, options=options).summary

    def record(point: CurvePoint) -> None:
        Sample.objects.create(
            run=run, t_s=round(time.monotonic() - began, 3), produced=0, consumed=0, unique=0,
            produce_eps=point.send_eps, consume_eps=point.consume_eps, backlog=0, p99_ms=point.p99_ms,
            offered_eps=point.rate_eps, kept_up=point.ok,
        )
        if on_step:
            on_step(point)

    try:
        best, curve = find_max_rate(step, slo_p99_ms=slo_p99_ms, start_rate_eps=start_rate_eps, on_point=record)
    except QueueError as exc:
        return run_fail(run=run, error=str(exc))
    run.status, run.finished_at = Run.Status.SUCCEEDED, timezone.now()
    run.summary = {
        "run_id": run.pk, "backend": spec.backend, "slo_p99_ms": slo_p99_ms, "max_rate_eps": best,
        "curve": [{"rate_eps": p.rate_eps, "p99_ms": p.p99_ms, "kept_up": p.kept_up, "ok": p.ok} for p in curve],
        "environment": environment.collect(),
    }
    run.throughput_eps = best
    run.environment = run.summary["environment"]
    run.save()
    return run


def _public_summary(run: Run) -> dict[str, Any]:
    summary = dict(run.summary) if run.summary else {"run_id": run.pk, "backend": run.backend}
    summary["status"], summary["error"] = run.status, run.error or None
    return summary
