"""What runs whose runner was killed leave behind: stale rows and server-side queues.

A runner that ends normally deletes its queue and stores its run. One killed with SIGKILL (or a
machine that lost power) leaves its row ``running`` and its tables, keys or queues on the
server. ``cleanup`` (the command, and cheaply for one backend at the start of every run) finds
them by the naming convention only and never touches anything else:

- a row is **stale** when it is still in flight (``finished_at`` empty) and its executor, the
  process recorded when it started on this host, is gone (or its pid now belongs to a process
  started later): marked failed with ``STALE_ERROR``. A running row of any host whose heartbeat
  (``Run.heartbeat_at``, written every few seconds by its executor) is older than
  ``settings.IMQ_STALE_AFTER_S`` is failed too (``SILENT_ERROR``): its cluster was killed or its
  machine restarted. Queued rows wait for a cluster and are never stale. Stale rows are found by
  what runs anyway, never by a page (a GET only reads): an executor's start (``executerun``
  and the cluster's task before it), the ``cleanup`` command, a terminal waiting for its runs, and the
  cluster's schedule every minute (``execution.tasks.stale_runs_task``).
- a queue is removed when its name is ``<namespace>.<run id>`` and it is the ``queue_name`` of a
  run of this database that has ended. A queue of a run still in flight, or one no run of this
  database names (another database's run on a shared server), is left alone and reported.
  Backends that can list their queues under a namespace do (``Backend.list_queues``); for the
  others (RabbitMQ: AMQP cannot list) the names recorded on the ended runs are looked up one by
  one (``Backend.queue_exists``). A run whose queue is found gone is marked ``queue_removed``
  so that it is not asked about again.

The cleanup at the start of a run (``leftovers_before_run``) connects as the run will, within the
run's ``connect_timeout_s``; a server that does not answer then fails the run at once, rather
than being waited for a second time by the run's own connection.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from experiments.models import Run
from queues.backends import BACKENDS, Backend, backend_class
from queues.errors import BackendUnavailable, NotSupported, QueueError
from queues.run.launch import NAMESPACE, build_backend, resolve_options
from queues.workers.processes import process_alive
from queues.workload.faults import RESTART_SERVER
from queues.workload.spec import WorkloadSpec

log = logging.getLogger(__name__)

STALE_ERROR = "runner process gone: found by cleanup"
SILENT_ERROR = (
    "executor stopped answering: no heartbeat for {seconds:.0f} s (its cluster was killed or its machine "
    "restarted); launch the run again"
)
#: A process started this long after its run is another process that reused the pid.
PID_REUSE_MARGIN_S = 2.0


@dataclass
class CleanupReport:
    """What ``leftovers_remove`` did, or would do with ``dry_run``."""

    stale: list[int] = field(default_factory=list)  # run pks marked failed
    removed: list[tuple[str, str, int]] = field(default_factory=list)  # (backend, queue, run pk)
    left_alone: dict[str, str] = field(default_factory=dict)  # queue -> why
    unreachable: dict[str, str] = field(default_factory=dict)  # backend -> error

    def lines(self, *, dry_run: bool) -> list[str]:
        verb = "would " if dry_run else ""
        out = [f"run {pk}: {verb}mark failed ({STALE_ERROR})" for pk in self.stale]
        out += [f"{backend}: {verb}remove {queue} (run {pk})" for backend, queue, pk in self.removed]
        out += [f"left alone: {queue} ({why})" for queue, why in sorted(self.left_alone.items())]
        out += [f"{backend}: not checked: {error}" for backend, error in sorted(self.unreachable.items())]
        return out


def runs_mark_stale(*, dry_run: bool = False) -> list[int]:
    """Mark failed every in-flight run whose executor on this host is gone, and every running
    run whose heartbeat stopped; their pks. Cheap when there is none: one indexed query each."""
    return _runs_without_executor(dry_run=dry_run) + _runs_without_heartbeat(dry_run=dry_run)


def _runs_without_heartbeat(*, dry_run: bool) -> list[int]:
    now = timezone.now()
    silent_since = now - timedelta(seconds=settings.IMQ_STALE_AFTER_S)
    stale = []
    for pk, heartbeat_at in Run.objects.filter(
        status=Run.Status.RUNNING, finished_at__isnull=True, heartbeat_at__lt=silent_since
    ).values_list("pk", "heartbeat_at"):
        error = SILENT_ERROR.format(seconds=(now - heartbeat_at).total_seconds())
        if dry_run or Run.objects.filter(pk=pk, status=Run.Status.RUNNING, heartbeat_at=heartbeat_at).update(
            status=Run.Status.FAILED, error=error, finished_at=now
        ):
            log.warning("run %s: %s", pk, error)
            stale.append(pk)
    return stale


def _runs_without_executor(*, dry_run: bool) -> list[int]:
    host, stale = socket.gethostname(), []
    # in flight: running, or cancelled and not yet stopped (``status`` is indexed; 10,000 ended
    # runs cost nothing here, and this runs before every run and every minute)
    in_flight = Run.objects.filter(
        status__in=(Run.Status.RUNNING, Run.Status.CANCELLED),
        finished_at__isnull=True,
        executor_host=host,
        executor_pid__isnull=False,
    )
    for run in in_flight.only("pk", "executor_pid", "started_at"):
        if executor_alive(pid=run.executor_pid, started_at=run.started_at):
            continue
        if dry_run or Run.objects.filter(
            pk=run.pk, finished_at__isnull=True, executor_host=host, executor_pid=run.executor_pid
        ).update(status=Run.Status.FAILED, error=STALE_ERROR, finished_at=timezone.now()):
            stale.append(run.pk)
    return stale


def executor_alive(*, pid: int, started_at: datetime | None) -> bool:
    """Whether process ``pid`` of this host still runs and is the one that started a run at
    ``started_at`` (not a later process that reused the pid, not a zombie)."""
    return process_alive(pid, started_by=None if started_at is None else started_at.timestamp() + PID_REUSE_MARGIN_S)


def leftovers_remove(
    *,
    backends: Iterable[str] | None = None,
    urls: Mapping[str, str] | None = None,
    namespace: str = NAMESPACE,
    dry_run: bool = False,
    quiet: bool = False,
    connect_timeout_s: float | None = None,
) -> CleanupReport:
    """Mark stale runs failed, then remove the queues of ended runs on ``backends`` (every
    registered one by default). A backend whose server does not answer (within
    ``connect_timeout_s``, else the backend's default) is reported in ``unreachable`` and
    skipped; nothing here raises a ``QueueError``. ``quiet`` logs at DEBUG (the cleanup at the
    start of a run) instead of INFO."""
    report = CleanupReport(stale=runs_mark_stale(dry_run=dry_run))
    # with ``dry_run`` the stale runs are still in flight in the database: count them as ended
    ended_q = Q(finished_at__isnull=False) | Q(pk__in=report.stale)
    in_flight = dict(Run.objects.exclude(ended_q).exclude(queue_name="").values_list("queue_name", "pk"))
    for alias in backends or sorted(BACKENDS):
        ended = {
            run.queue_name: run
            for run in Run.objects.filter(ended_q, queue_removed=False, spec__backend=alias).filter(
                queue_name__startswith=f"{namespace}."
            )
        }
        try:
            backend = build_backend(
                alias, urls=urls, namespace=namespace, options=_connect_options(alias, connect_timeout_s)
            )
            backend.connect()
            try:
                _clean_backend(backend, alias, namespace, ended, in_flight, ended_q, report, dry_run=dry_run)
            finally:
                backend.close()
        except QueueError as exc:
            report.unreachable[alias] = str(exc)
    for line in report.lines(dry_run=dry_run):
        log.log(logging.DEBUG if quiet else logging.INFO, "cleanup: %s", line)
    return report


def leftovers_before_run(*, spec: WorkloadSpec, options: Mapping[str, object], urls: Mapping[str, str]) -> None:
    """The cleanup at the start of a run of ``spec`` with the backend ``options``: stale runs, and
    what ended runs left on its backend, connecting within the run's ``connect_timeout_s``.

    Raises ``BackendUnavailable`` (or ``InvalidSpec`` for options the backend does not take) when
    the run's server did not answer: the run would wait for it a second time and fail the same
    way. A run on a private server (a ``restart-server`` fault) does not use the shared one, and
    starts whatever the shared one did."""
    timeout_s = resolve_options(spec.backend, options).get("connect_timeout_s")
    report = leftovers_remove(
        backends=[spec.backend],
        urls=urls,
        quiet=True,
        connect_timeout_s=None if timeout_s is None else float(timeout_s),
    )
    error = report.unreachable.get(spec.backend)
    if error and not any(fault.kind == RESTART_SERVER for fault in spec.fault_specs):
        raise BackendUnavailable(error)


def _connect_options(alias: str, connect_timeout_s: float | None) -> dict[str, float]:
    """``connect_timeout_s`` as an option of ``alias``, if given and the backend takes it."""
    if connect_timeout_s is None or not any(o.name == "connect_timeout_s" for o in backend_class(alias).options):
        return {}
    return {"connect_timeout_s": connect_timeout_s}


def _clean_backend(
    backend: Backend,
    alias: str,
    namespace: str,
    ended: dict[str, Run],
    in_flight: dict[str, int],
    ended_q: Q,
    report: CleanupReport,
    *,
    dry_run: bool,
) -> None:
    try:
        found = backend.list_queues(namespace)
    except NotSupported:
        found = [name for name in ended if backend.queue_exists(name)]
    others = set()  # queues of ended runs on another backend sharing the server: removed under theirs
    if any(name not in ended for name in found):
        others = set(Run.objects.filter(ended_q, queue_name__in=found).values_list("queue_name", flat=True))
    gone = [run.pk for name, run in ended.items() if name not in found]
    for name in found:
        if name in ended:
            if not dry_run:
                backend.delete(name)
                Run.objects.filter(pk=ended[name].pk).update(queue_removed=True)
            report.removed.append((alias, name, ended[name].pk))
        elif name in in_flight:
            report.left_alone[name] = f"run {in_flight[name]} is still in flight"
        elif name not in others:
            report.left_alone[name] = "no run of this database has it"
    if gone and not dry_run:
        Run.objects.filter(pk__in=gone).update(queue_removed=True)
