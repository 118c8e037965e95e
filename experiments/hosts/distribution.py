"""Distributed runs over the database: the transport between a run's coordinator and its load
hosts (``queues.distributed`` holds the engine's side: the plan, the merge, both loops).

Everything travels through rows of the one database every host already reaches: the
coordinator creates a ``HostShare`` per host and routes a django-q2 task to the host's queue
(``async_task(..., cluster="imq-host-<name>")``); the host marks its share joined with its
clock offset, reads the start time and the stop from it, and writes a ``HostReport`` every
``REPORT_S``, which the coordinator reads and deletes. A host is handed at most one share per
run and only when it has a free worker (``Host.busy < Host.workers``): a share that waited in the
broker behind another run's would hold the start barrier until the join timeout.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone
from django_q.tasks import async_task

from experiments.hosts.heartbeat import clock_offset_measure, host_queue, hosts_alive
from experiments.models import Host, HostReport, HostShare, Run
from queues.distributed.coordinator import DistributedRunner
from queues.distributed.host import run_share
from queues.distributed.plan import Share, plan_shares
from queues.distributed.reports import ShareReport
from queues.errors import QueueError
from queues.measurement.clocks import ClockOffset
from queues.measurement.histograms import IntervalSample
from queues.run.launch import build_backend
from queues.run.runner import RunResult
from queues.workload.spec import WorkloadSpec

log = logging.getLogger(__name__)


class DatabaseHostLink:
    """``queues.distributed.coordinator.HostLink`` over ``HostShare`` and ``HostReport`` rows of ``run``."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.last_report_pk = 0

    def dispatch(self, shares: Mapping[str, Share]) -> float:
        alive = {h.name: h for h in hosts_alive(names=list(shares))}
        if missing := sorted(set(shares) - set(alive)):
            seen = {h.name: h.last_seen for h in Host.objects.filter(name__in=missing)}
            raise QueueError(
                "load host(s) not answering: "
                + ", ".join(
                    f"{h} (last heartbeat {timezone.now() - seen[h]} ago)" if h in seen else f"{h} (never seen)"
                    for h in missing
                )
            )
        if full := sorted(h for h, host in alive.items() if host.busy >= host.workers):
            raise QueueError("load host(s) with no free worker (busy with another run): " + ", ".join(full))
        offset = clock_offset_measure()
        for name, share in shares.items():
            row = HostShare.objects.create(
                run=self.run, host=name, producers=list(share.producers), consumers=list(share.consumers)
            )
            async_task(
                "experiments.execution.tasks.host_share_task",
                row.pk,
                cluster=host_queue(name),
                task_name=f"run {self.run.pk} on {name}",
            )
        return offset.offset_s

    def _shares(self) -> Any:
        return HostShare.objects.filter(run=self.run)

    def joined(self) -> dict[str, float]:
        return dict(
            self._shares()
            .filter(status__in=[HostShare.Status.JOINED, HostShare.Status.RUNNING])
            .values_list("host", "clock_offset_s")
        )

    def failed(self) -> dict[str, str]:
        return dict(self._shares().filter(status=HostShare.Status.FAILED).values_list("host", "error"))

    def start(self, start_ns: int, shifts: Mapping[str, list[int]]) -> None:
        for host, shift in shifts.items():
            self._shares().filter(host=host).update(start_ns=start_ns, latency_shifts=shift)

    def reports(self) -> list[tuple[str, bytes]]:
        rows = list(
            HostReport.objects.filter(share__run=self.run, pk__gt=self.last_report_pk)
            .order_by("pk")
            .values_list("pk", "share__host", "payload")
        )
        if rows:
            self.last_report_pk = rows[-1][0]
            HostReport.objects.filter(share__run=self.run, pk__lte=self.last_report_pk).delete()
        return [(host, bytes(payload)) for _, host, payload in rows]

    def stop(self) -> None:
        self._shares().update(stop=True)


def run_distributed(
    *,
    run: Run,
    spec: WorkloadSpec,
    run_id: str,
    options: Mapping[str, Any],
    placement: Mapping[str, Any],
    on_sample: Callable[[IntervalSample], None],
    on_progress: Callable[[int, int], None] | None,
    should_cancel: Callable[[], bool],
) -> RunResult:
    """Coordinate ``run`` over its load hosts (``run_execute`` calls it for a placed run)."""
    shares = plan_shares(spec, placement)
    backend = build_backend(spec.backend, urls=settings.IMQ_URLS, options=options)
    runner = DistributedRunner(
        spec,
        backend,
        run_id=run_id,
        link=DatabaseHostLink(run),
        shares=shares,
        join_timeout_s=settings.IMQ_HOST_JOIN_TIMEOUT_S,
        on_sample=on_sample,
        on_progress=on_progress,
        should_cancel=should_cancel,
    )
    result = runner.run()
    result.environment["options"] = dict(backend.option_values)
    result.summary["options"] = dict(backend.option_values)
    result.environment["placement"] = dict(placement)
    return result


class DatabaseShareChannel:
    """``queues.distributed.host.ShareChannel`` over one ``HostShare`` row."""

    def __init__(self, share: HostShare) -> None:
        self.share = share

    def joined(self, offset: ClockOffset) -> None:
        HostShare.objects.filter(pk=self.share.pk).update(
            status=HostShare.Status.JOINED, clock_offset_s=offset.offset_s, clock_uncertainty_s=offset.uncertainty_s
        )

    def start_signal(self) -> tuple[int, list[int]] | None:
        start_ns, shifts = HostShare.objects.values_list("start_ns", "latency_shifts").get(pk=self.share.pk)
        if start_ns is None:
            return None
        HostShare.objects.filter(pk=self.share.pk).update(status=HostShare.Status.RUNNING)
        return start_ns, shifts

    def stopped(self) -> bool:
        stop, status = HostShare.objects.values_list("stop", "run__status").get(pk=self.share.pk)
        return stop or status != Run.Status.RUNNING

    def report(self, report: ShareReport) -> None:
        HostReport.objects.create(share_id=self.share.pk, seq=report.seq, payload=report.encode())
        if report.final:
            HostShare.objects.filter(pk=self.share.pk).update(
                status=HostShare.Status.FAILED if report.error else HostShare.Status.DONE, error=report.error or ""
            )


def share_execute(*, share_id: int) -> str:
    """Run this host's share ``share_id`` (``manage.py hostshare``); what happened, in words."""
    share = HostShare.objects.select_related("run").get(pk=share_id)
    run = share.run
    if share.status != HostShare.Status.ENQUEUED or share.stop or run.status != Run.Status.RUNNING:
        return f"share {share_id} of run {run.pk}: not started (the run is {run.status}, the share {share.status})"
    HostShare.objects.filter(pk=share_id).update(pid=os.getpid())
    host = Host.objects.filter(name=settings.IMQ_HOST_NAME or share.host)
    host.update(busy=F("busy") + 1)
    try:
        spec = WorkloadSpec.from_mapping({k: v for k, v in run.spec.items() if k not in ("options", "placement")})
        backend = build_backend(spec.backend, urls=settings.IMQ_URLS, options=run.spec.get("options") or {})
        outcome = run_share(
            spec,
            backend,
            queue=run.queue_name,
            share=Share(share.host, tuple(share.producers), tuple(share.consumers)),
            channel=DatabaseShareChannel(share),
            offset=clock_offset_measure(),
            mp_context=multiprocessing.get_context("fork"),
        )
    except Exception as exc:  # the coordinator learns it at once instead of at the join timeout
        HostShare.objects.filter(pk=share_id).update(
            status=HostShare.Status.FAILED, error=f"{type(exc).__name__}: {exc}"
        )
        raise
    finally:
        host.update(busy=F("busy") - 1)
    return f"share {share_id} of run {run.pk} on {share.host}: {outcome}"
