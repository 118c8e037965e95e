"""Writes: turn specs into rows, launch and record runs. Keyword-only, ``<entity>_<action>``.

Every run goes through ``run_execute``, whether the admin, a django-q2 worker or a management
command started it, so a run is stored the same way whoever launched it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from experiments.models import Experiment, Run, Sample
from experiments.selectors import run_is_cancelled
from queues import environment
from queues.errors import QueueError
from queues.launch import build_backend, check_alias, run_spec
from queues.metrics import Sample as EngineSample
from queues.runner import Faults, RunResult
from queues.workload import WorkloadSpec

SPEC_FIELDS = ("backend", "events", "producers", "consumers", "events_per_message", "batch", "idle_timeout_s")
CANCEL_CHECK_S = 0.5


def spec_validate(*, values: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> WorkloadSpec:
    """A valid spec for ``values`` whose backend exists, or ``InvalidSpec``/``UnknownBackend``
    with a message that says what is allowed. Touches no database."""
    spec = WorkloadSpec.from_mapping(values)
    if check_alias(spec.backend) == "backend":
        build_backend(spec.backend, urls=settings.IMQ_URLS, options=options)  # no I/O: checks the alias
    else:
        from queues.approaches import validate

        validate(spec)
    return spec


def experiment_spec(*, experiment: Experiment) -> WorkloadSpec:
    return spec_validate(values={f: getattr(experiment, f) for f in SPEC_FIELDS}, options=experiment.options)


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
def run_prepare(*, spec: WorkloadSpec, experiment_name: str, options: Mapping[str, Any] | None = None) -> Run:
    """The experiment (created if missing) and a queued run of ``spec``, in one transaction."""
    experiment = experiment_get_or_create(name=experiment_name, spec=spec, options=options)
    return run_create(experiment=experiment, spec=spec, options=options)
