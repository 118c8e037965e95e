"""Writes: turn specs into rows, launch and record runs. Keyword-only, ``<entity>_<action>``.

Every run goes through ``run_execute``, whether the admin, a django-q2 worker or a management
command started it, so a run is stored the same way whoever launched it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from experiments import signals
from experiments.hosts.distribution import run_distributed
from experiments.models import Experiment, Run, RunSeries, Sample
from experiments.selectors import run_is_cancelled
from experiments.services.cleanup import leftovers_before_run
from experiments.validation import SPEC_FIELDS
from queues.errors import QueueError
from queues.measurement import environment
from queues.measurement.histograms import IntervalSample
from queues.run.launch import NAMESPACE, check_alias, run_spec
from queues.run.runner import Faults, RunResult
from queues.workload.spec import WorkloadSpec

CANCEL_CHECK_S = 0.5
#: How often a running run's executor writes its heartbeat (``Run.heartbeat_at``).
HEARTBEAT_S = 2.0


def experiment_get_or_create(*, name: str, spec: WorkloadSpec, options: Mapping[str, Any] | None = None) -> Experiment:
    """The experiment called ``name``; a new one takes ``spec`` as its definition. An existing
    one keeps its definition: each run stores the spec it actually ran."""
    experiment, _ = Experiment.objects.get_or_create(
        name=name, defaults={**{f: getattr(spec, f) for f in SPEC_FIELDS}, "options": dict(options or {})}
    )
    return experiment


def run_create(
    *,
    experiment: Experiment,
    spec: WorkloadSpec,
    options: Mapping[str, Any] | None = None,
    series: RunSeries | None = None,
) -> Run:
    """A queued run of ``spec``: the run keeps its own copy, so that editing the experiment
    later never rewrites what this run ran."""
    placement = {"placement": experiment.placement} if experiment.placement else {}  # on load hosts
    return Run.objects.create(
        experiment=experiment,
        series=series,
        backend=spec.backend,
        spec={**spec.as_dict(), "options": dict(options or {}), **placement},
    )


def run_execute(
    *,
    run: Run,
    on_progress: Callable[[int, int], None] | None = None,
    faults: Faults | None = None,
    interrupted: Callable[[], str | None] | None = None,
) -> Run:
    """Run ``run`` to the end and store everything: samples as they come, then the result.

    Only a queued run starts (``queued -> running`` in one conditional UPDATE, which also
    records the run's queue name and this process as its executor, for ``cleanup``): a run
    cancelled while queued, or one already started or ended, is returned as stored, unchanged.
    Before it starts, what earlier runs on the same backend left behind is removed
    (``cleanup.leftovers_before_run``). A backend that cannot be reached, a worker that dies or a
    cancel ends the run as failed or cancelled with its error; what was counted until then is
    stored. ``interrupted`` is a second cancel probe (the command's signal handlers): it
    returns why the run must stop (``"interrupted by SIGINT"``), or ``None``; the run then ends
    as cancelled with that reason. A ``KeyboardInterrupt`` (a second Ctrl-C) stops at once and
    stores the run as failed before it propagates.
    """
    if interrupted and (reason := interrupted()):  # between the runs of a series: start none
        Run.objects.filter(pk=run.pk, status=Run.Status.QUEUED).update(
            status=Run.Status.CANCELLED, error=reason, finished_at=timezone.now()
        )
        run.refresh_from_db()
        return run
    run_id = f"r{run.pk}-{uuid.uuid4().hex[:6]}"
    if not _run_start(run=run, queue_name=f"{NAMESPACE}.{run_id}"):
        run.refresh_from_db()
        return run
    options = run.spec.get("options", {})
    spec = WorkloadSpec.from_mapping({k: v for k, v in run.spec.items() if k not in ("options", "placement")})
    probe = _CancelProbe(run.pk, interrupted)
    try:
        if check_alias(spec.backend) == "backend":
            leftovers_before_run(spec=spec, options=options, urls=settings.IMQ_URLS)
        if run.spec.get("placement"):  # its workers run on load hosts
            result = run_distributed(
                run=run,
                spec=spec,
                run_id=run_id,
                options=options,
                placement=run.spec["placement"],
                on_sample=lambda sample: sample_create(run=run, sample=sample),
                on_progress=on_progress,
                should_cancel=probe,
            )
        else:
            result = run_spec(
                spec,
                run_id=run_id,
                urls=settings.IMQ_URLS,
                options=options,
                on_sample=lambda sample: sample_create(run=run, sample=sample),
                on_progress=on_progress,
                should_cancel=probe,
                faults=faults,
            )
    except QueueError as exc:
        return run_fail(run=run, error=str(exc))
    except KeyboardInterrupt:
        run_fail(run=run, error="interrupted twice: stopped at once, without the workers' last counts")
        raise
    except BaseException as exc:
        run_fail(run=run, error=f"internal error: {type(exc).__name__}: {exc}")
        raise
    if result.status == Run.Status.CANCELLED and probe.reason:
        result.error = result.summary["error"] = probe.reason
    return run_finish(run=run, result=result)


def _run_start(*, run: Run, queue_name: str) -> bool:
    """``queued -> running``, recording the queue and the executor (this process on this
    host); False (and nothing written) if the run was not queued."""
    started = {
        "status": Run.Status.RUNNING,
        "started_at": timezone.now(),
        "queue_name": queue_name,
        "executor_host": socket.gethostname(),
        "executor_pid": os.getpid(),
        "heartbeat_at": timezone.now(),
    }
    if not Run.objects.filter(pk=run.pk, status=Run.Status.QUEUED).update(**started):
        return False
    for name, value in started.items():
        setattr(run, name, value)
    return True


class _CancelProbe:
    """The runner's ``should_cancel``: true once ``interrupted`` gives a reason (checked on
    every call: it only reads a flag) or the run was cancelled in the database (asked at most
    every ``CANCEL_CHECK_S``, the first time ``CANCEL_CHECK_S`` after the runner first asks, at
    the start signal). ``reason`` says which. Every ``HEARTBEAT_S`` the database check is the
    run's heartbeat instead: a conditional write of ``heartbeat_at`` that also tells whether
    the run is still ``running`` (see ``runs_fail_stale``).

    Not at the start signal itself: the first query after the workers were forked writes to
    about 1,200 pages of the Django heap that this process shares copy-on-write with them
    (5-30 ms of page faults measured here), the runner reads no report meanwhile, and the
    consumer waits on its report pipe in the middle of the drain being timed. A cancel is still
    noticed within ``CANCEL_CHECK_S``.

    The database is not asked from inside a running event loop (the ``asyncio`` approach
    accounts in a coroutine): Django refuses synchronous queries there, and that approach is a
    short in-process burst; an interrupt still stops it."""

    def __init__(self, run_id: int, interrupted: Callable[[], str | None] | None) -> None:
        self.run_id, self.interrupted = run_id, interrupted
        self.next_check: float | None = None
        self.next_beat = time.monotonic() + HEARTBEAT_S
        self.cancelled = False
        self.reason: str | None = None

    def __call__(self) -> bool:
        if self.interrupted and (reason := self.interrupted()):
            self.reason = reason
            return True
        now = time.monotonic()
        if self.next_check is None:
            self.next_check = now + CANCEL_CHECK_S
        elif now >= self.next_check and not _in_event_loop():
            self.next_check = now + CANCEL_CHECK_S
            if now >= self.next_beat:
                self.next_beat = now + HEARTBEAT_S
                # not running any more: cancelled, or failed by someone who thought it dead
                self.cancelled = not run_heartbeat(run_id=self.run_id)
            else:
                self.cancelled = run_is_cancelled(run_id=self.run_id)
        return self.cancelled


def run_heartbeat(*, run_id: int) -> bool:
    """Record that the executor of ``run_id`` is alive; False if the run is no longer running."""
    return bool(Run.objects.filter(pk=run_id, status=Run.Status.RUNNING).update(heartbeat_at=timezone.now()))


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def sample_create(*, run: Run, sample: IntervalSample) -> Sample:
    """Store one interval sample of ``run``; ``signals.sample_stored`` tells the live page and
    Prometheus."""
    latency = sample.latency_ms or {}
    row = Sample.objects.create(
        run=run,
        t_s=sample.t_s,
        produced=sample.produced,
        consumed=sample.consumed,
        unique=sample.unique,
        produce_eps=sample.produce_eps,
        consume_eps=sample.consume_eps,
        depth=sample.depth,
        backlog=sample.backlog,
        p50_ms=latency.get("p50"),
        p90_ms=latency.get("p90"),
        p99_ms=latency.get("p99"),
        p999_ms=latency.get("p999"),
        max_ms=latency.get("max"),
        offered_eps=sample.offered_eps,
        send_delay_p99_ms=sample.send_delay_p99_ms,
        due=sample.due,
        depth_detail=sample.depth_detail,
        markers=sample.markers,
    )
    signals.sample_stored.send(sender=Run, run=run, row=row, sample=sample)  # stored first: a viewer may read it back
    return row


def run_finish(*, run: Run, result: RunResult) -> Run:
    """Store the runner's result on a running run (see ``_run_end`` for a cancel meanwhile)."""
    summary = dict(result.summary, run_id=run.pk, environment=result.environment)
    latency = summary.get("latency_ms") or {}
    return _run_end(
        run=run,
        status=result.status,
        error=result.error or "",
        fields={
            "environment": result.environment,
            "summary": summary,
            "verdict": summary["verdict"],
            "duration_s": summary["duration_s"],
            "throughput_eps": summary["throughput_eps"],
            "latency_p50_ms": latency.get("p50"),
            "latency_p99_ms": latency.get("p99"),
            "unique": summary["unique"],
            "duplicates": summary["duplicates"],
            "lost": summary["lost"],
        },
    )


def run_fail(*, run: Run, error: str) -> Run:
    """End a running run as failed with ``error``, keeping what it stored until then."""
    return _run_end(
        run=run,
        status=Run.Status.FAILED,
        error=error,
        fields={
            "environment": run.environment or environment.collect(),
        },
    )


def _run_end(*, run: Run, status: str, error: str, fields: dict[str, Any]) -> Run:
    """Write the end of ``run`` only if it is still in flight: from ``running``, with ``status``.

    A run cancelled while it ran (``run_cancel`` set ``cancelled``, the runner's cancel probe
    stopped it) keeps ``cancelled`` and gets its counts; a run that already ended is never
    overwritten. Returns the run as stored.
    """
    finished_at = timezone.now()
    in_flight = Run.objects.filter(pk=run.pk, finished_at__isnull=True)
    summary = fields.get("summary")
    ended = in_flight.filter(status=Run.Status.RUNNING).update(
        **fields, status=status, error=error, finished_at=finished_at
    )
    if not ended:
        cancelled = {"status": Run.Status.CANCELLED, "error": error or "cancelled by the user"}
        if summary is not None:
            fields = {**fields, "summary": {**summary, **cancelled}}
        ended = in_flight.filter(status=Run.Status.CANCELLED).update(**fields, **cancelled, finished_at=finished_at)
    run.refresh_from_db()
    # ``counted``: this call ended it, so a total counts it once, whoever else tries to end it too
    signals.run_ended.send(sender=Run, run=run, counted=bool(ended))
    return run


def run_cancel(*, run: Run) -> bool:
    """Ask a queued or running run to stop. A queued run ends here and will never start; a
    running one is stopped by the runner's cancel probe within a second, then stored with its
    counts (``_run_end``)."""
    now = timezone.now()
    if Run.objects.filter(pk=run.pk, status=Run.Status.QUEUED).update(
        status=Run.Status.CANCELLED, finished_at=now, error="cancelled by the user before it started"
    ):
        # a run that never started measured nothing: no total counts it (``counted`` false)
        signals.run_ended.send(sender=Run, run=run, counted=False)
        return True
    return bool(Run.objects.filter(pk=run.pk, status=Run.Status.RUNNING).update(status=Run.Status.CANCELLED))


@transaction.atomic
def run_prepare(
    *,
    spec: WorkloadSpec,
    experiment_name: str,
    options: Mapping[str, Any] | None = None,
    series: RunSeries | None = None,
) -> Run:
    """The experiment (created if missing) and a queued run of ``spec``, in one transaction."""
    experiment = experiment_get_or_create(name=experiment_name, spec=spec, options=options)
    return run_create(experiment=experiment, spec=spec, options=options, series=series)
