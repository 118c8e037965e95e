"""Runs one experiment: starts producer and consumer workers, accounts, samples, and reports.

The runner ties four parts together: ``Supervisor`` (the workers: spawn, ready barrier,
liveness, stop), ``Accounting`` (ledger, histograms, tallies, samples, fed by the workers'
messages), the fault objects (``queues.faults.injectors``, polled on every turn of the watch loop) and
the pure summary functions (``queues.measurement.summary``). It ends a run when every event has been
counted once (success), when the consumers have received nothing for ``idle_timeout_s`` after
the producers finished, when a worker fails or dies, or when the caller cancels. Whatever ended
it, the workers are stopped (a hung one killed) and the final drain (``queues.run.drain``) reads what
the queue still holds into the ledger before the run is judged: ``lost`` is then only what the
queue no longer has anywhere. The result holds every figure counted so far.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from queues.backends import Backend
from queues.errors import QueueError
from queues.faults.injectors import Fault, Faults, RunHandle, TimedFault, build, from_spec
from queues.measurement import environment
from queues.measurement.histograms import IntervalSample
from queues.measurement.ledger import Ledger
from queues.measurement.summary import (
    LOST_IN_RESTART,
    LOST_UNCONFIRMED,
    drain_seconds,
    fault_figures,
    guarantee_contradictions,
    loss_judgement,
    steady_figures,
    summarise,
)
from queues.run.accounting import Accounting
from queues.run.drain import DrainResult, final_drain
from queues.run.result import RunResult, RunStatus
from queues.run.supervising import RunSupervisor, SupervisorFactory
from queues.workers.channel import SharedFlag
from queues.workers.context import WorkerContext
from queues.workers.reports import CONSUMER, PRODUCER
from queues.workers.supervision import KILLED_FROM_OUTSIDE, STOP_TIMEOUT_S, Supervisor, Worker
from queues.workload.spec import WorkloadSpec

__all__ = ["Faults", "RunResult", "RunStatus", "Runner"]

log = logging.getLogger(__name__)

STALL_LIMIT_S = 60.0  # no event sent or received for this long: the run fails instead of hanging
POLL_S = 0.005
#: Deleting the run's queue at the end: tries on a new control connection when the last one was
#: lost, this far apart (a broker restart takes seconds; the run must still end soon).
DELETE_ATTEMPTS, DELETE_PAUSE_S = 3, 1.0
#: Faults after which a queue may rightly deliver a message again: its consumer was lost
#: (killed, stalled past a claim timeout, cut off) or its server restarted.
REDELIVERY_CAUSES = ("kill-consumer", "pause-consumer", "cut-connections", "restart-server")


@dataclass(frozen=True)
class _Clock:
    """When the run started (the producers' start signal), on both clocks it is read on."""

    t0_ns: int  # time.time_ns(): events' timestamps are on this clock
    t0: float  # time.monotonic(): the samples' and the watch loop's
    window_ns: tuple[int, int]  # the measured window of intended send times


class Runner:
    """One run of ``spec`` on ``backend``. Call ``run()`` once."""

    def __init__(
        self,
        spec: WorkloadSpec,
        backend: Backend,
        *,
        run_id: str,
        on_sample: Callable[[IntervalSample], None] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        faults: Faults | Sequence[Fault] | None = None,
        sample_interval_s: float = 1.0,
        profile_dir: str | None = None,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        server: Any = None,
        supervise: SupervisorFactory | None = None,
        start: Callable[[], int] = time.time_ns,
    ) -> None:
        """``server`` is the private server (``queues.faults.servers``) the backend points at, which a
        ``restart-server`` fault restarts; the caller starts and closes it.

        ``supervise`` builds what runs the workers (``queues.run.supervising``; by default a
        ``Supervisor`` that forks them here); ``start`` is called once they are all ready, and
        returns when the producers start (``time.time_ns()``), once that time has come (by default
        now). A distributed run passes both (``queues.distributed.coordinator``)."""
        self.spec, self.backend, self.run_id = spec, backend, run_id
        self.on_sample, self.on_progress = on_sample, on_progress
        self.should_cancel = should_cancel or (lambda: False)
        # the spec's faults, then the declared ``Faults`` or fault objects of any kind (see
        # ``queues.faults.injectors.Fault``) a test or a benchmark adds
        extra = build(faults) if isinstance(faults, Faults) else list(faults or [])
        self.faults: list[Fault] = [*from_spec(spec.fault_specs), *extra]
        self.timed_faults = [f for f in self.faults if isinstance(f, TimedFault)]  # reported in the summary
        for fault in self.faults:
            fault.check(backend)
        self.server = server
        self.sample_interval_s = sample_interval_s
        self.queue = f"{backend.namespace}.{run_id}"
        self.accounting = Accounting(spec)
        # threads where the backend's queue cannot be shared between processes
        threads = not backend.capabilities.processes
        mp_context = multiprocessing.get_context("fork")
        self.start_event: Any = threading.Event() if threads else SharedFlag(mp_context)
        self.stop_event: Any = threading.Event() if threads else SharedFlag(mp_context)
        self.worker_ctx = WorkerContext(
            spec,
            backend,
            self.queue,
            None,  # type: ignore[arg-type]  # each worker gets its own channel
            self.start_event,
            self.stop_event,
            _Box(0) if threads else mp_context.Value("q", 0, lock=False),
            [0] * spec.producers if threads else mp_context.Array("q", spec.producers, lock=False),
            profile_dir,
        )
        self.start_at = start
        self.supervisor: RunSupervisor = (
            supervise(self.worker_ctx, self.accounting.apply, stop_timeout_s)
            if supervise
            else Supervisor(
                mp_context=mp_context,
                context=self.worker_ctx,
                threads=threads,
                on_message=self.accounting.apply,
                on_kill=self._note_kill,
                on_replace=self._note_replace,
                stop_timeout_s=stop_timeout_s,
                replace_after_s=spec.replace_after_s,
            )
        )
        self.handle = RunHandle(backend, self.queue, self.supervisor, self.accounting, server, self._elapsed_s)
        self.clock: _Clock | None = None  # set when the producers are told to start
        self.drain: DrainResult | None = None  # set by the final drain, if the server answered it
        self.drain_error: str | None = None  # why there was no final drain

    @property
    def ledger(self) -> Ledger:
        return self.accounting.ledger

    @property
    def samples(self) -> list[IntervalSample]:
        return self.accounting.samples

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run to the end. Raises ``BackendUnavailable`` only before anything was sent (the
        server is unreachable); every later failure is returned as a failed result."""
        backend = self.backend
        backend.connect()
        try:
            backend.reconnecting(backend.declare, self.queue)
            backend.reconnecting(backend.purge, self.queue)
            backend_env = backend.reconnecting(backend.environment)
            status, error = self._run_workers()
            late = next((f.late_error for f in self.timed_faults if f.late_error), None)
            if late and status == RunStatus.SUCCEEDED:  # never a clean outcome for a fault that did not happen
                status, error = RunStatus.FAILED, late
            status, error = self._final_drain(status, error)
        finally:
            left = self._cleanup()
        if left and status == RunStatus.SUCCEEDED:
            status, error = RunStatus.FAILED, left  # every count is kept; the queue waits for `cleanup`
        return self._result(status, error, backend_env)

    def _run_workers(self) -> tuple[RunStatus, str | None]:
        try:
            for index in range(self.spec.consumers):
                self.supervisor.spawn(CONSUMER, index)
            for index in range(self.spec.producers):
                self.supervisor.spawn(PRODUCER, index)
            self.supervisor.await_ready()
            for fault in self.faults:
                fault.before_start(self.handle)
            self._start()
            return self._watch()
        except QueueError as exc:
            return RunStatus.FAILED, str(exc)
        finally:
            self.stop_event.set()
            self.start_event.set()  # release anyone still waiting to start
            for fault in self.faults:
                fault.end(self.handle)
            self.supervisor.stop()

    def _final_drain(self, status: RunStatus, error: str | None) -> tuple[RunStatus, str | None]:
        """Read what the queue still holds into the ledger (``queues.run.drain``), whatever ended the
        run, then take the final sample while the queue still exists. A server that does not
        answer the drain fails a run that had succeeded: it cannot be judged."""
        try:
            return self._read_what_is_left(status, error)
        finally:
            self.supervisor.reap()  # the workers that were done and waited on the queue's pipe

    def _read_what_is_left(self, status: RunStatus, error: str | None) -> tuple[RunStatus, str | None]:
        if self.clock is None:
            return status, error  # never started: nothing was sent
        if status == RunStatus.CANCELLED:
            # a cancel stops now: reading a backlog of millions first could take minutes. What
            # the queue still holds is removed with it, unread; the last sample shows its depth
            self._take_sample()
            return status, error
        released_by = None
        try:
            if self.supervisor.last_kill is not None:
                released_by = self.supervisor.last_kill + self.backend.release_after_s
                self.backend.release_dead_consumers(self.queue)
            self.drain = final_drain(
                backend=self.backend, queue=self.queue, accounting=self.accounting, released_by=released_by
            )
        except QueueError as exc:
            self.drain_error = f"the final drain could not read the queue: {exc}"
            if status == RunStatus.SUCCEEDED:
                status, error = RunStatus.FAILED, self.drain_error
            else:  # the run's own error (often the same lost server) says more
                log.info("%s: %s", self.queue, self.drain_error)
        self._take_sample()  # the final, partial interval
        return status, error

    def _note_kill(self, worker: Worker) -> None:
        reason = worker.kill_reason or "killed"
        self.accounting.note_kill(role=worker.role, index=worker.index, reason=reason)
        if reason.startswith(KILLED_FROM_OUTSIDE):  # a fault marks its own kill
            self.accounting.mark(self._elapsed_s(), "killed", f"{worker.role} {worker.index}", reason)

    def _note_replace(self, dead: Worker, replacement: Worker) -> None:
        self.accounting.mark(
            self._elapsed_s(),
            "replaced",
            f"{dead.role} {dead.index}",
            f"{replacement.role} {replacement.index} started in its place",
        )

    def _elapsed_s(self) -> float:
        """Seconds since the producers started (0 before)."""
        return time.monotonic() - self.clock.t0 if self.clock else 0.0

    def _start(self) -> None:
        t0_ns = self.start_at()
        t0 = time.monotonic()
        self.worker_ctx.t0_ns.value = t0_ns
        self.clock = _Clock(t0_ns, t0, self.worker_ctx.window_ns())
        self.accounting.window_end_ns = self.clock.window_ns[1]
        self.accounting.t0_ns = t0_ns
        self.accounting.tally.last_progress = t0
        self.start_event.set()

    def _watch(self) -> tuple[RunStatus, str | None]:
        assert self.clock is not None
        next_sample = self.clock.t0 + self.sample_interval_s
        activity, last_activity = (0, 0), self.clock.t0
        stall_limit_s = max(STALL_LIMIT_S, 3 * self.spec.idle_timeout_s)
        ledger, supervisor = self.accounting.ledger, self.supervisor
        while True:
            supervisor.pump(POLL_S)
            supervisor.check()
            for fault in self.faults:
                fault.poll(self.handle)
            now = time.monotonic()
            if (current := (sum(self.worker_ctx.sent), ledger.received)) != activity:
                activity, last_activity = current, now
            elif now - last_activity > stall_limit_s:
                raise QueueError(
                    f"no event was sent or received for {stall_limit_s:.0f} s: the backend or a worker is stuck"
                )
            if now >= next_sample:
                self._take_sample()
                next_sample += self.sample_interval_s
            if self.on_progress:
                self.on_progress(ledger.unique, self.spec.events)
            producers_done = supervisor.producers_done()
            if ledger.complete and producers_done:
                return RunStatus.SUCCEEDED, None
            if self.should_cancel():
                return RunStatus.CANCELLED, "cancelled by the user"
            if producers_done and now - self.accounting.tally.last_progress > self.spec.idle_timeout_s:
                return RunStatus.SUCCEEDED, None  # finished; the ledger's verdict says what was lost

    def _cleanup(self) -> str | None:
        """Delete the run's queue, on a new control connection if the last one was lost;
        return the one-line error when it could not be deleted, else ``None``."""
        backend = self.backend
        try:
            backend.reconnecting(backend.delete, self.queue, attempts=DELETE_ATTEMPTS, pause_s=DELETE_PAUSE_S)
        except QueueError as exc:
            # the queue left behind is named here; `manage.py cleanup` removes it later
            log.error("could not delete the run's queue %r on %s: %s", self.queue, backend.name, exc)
            return f"{exc}; the run's queue {self.queue} is left for `manage.py cleanup`"
        finally:
            backend.close()
        return None

    # -- figures ---------------------------------------------------------------------------

    def _take_sample(self) -> None:
        assert self.clock is not None
        produced = sum(self.worker_ctx.sent)
        # due on the producers' clock (time_ns), read after ``produced``: never fewer than were sent
        due = self.accounting.due_by(time.time_ns() - self.clock.t0_ns)
        detail = self._depth_detail()
        sample = self.accounting.take_sample(
            elapsed_s=time.monotonic() - self.clock.t0,
            produced=produced,
            due=due,
            depth=detail.get("total") if detail else None,
            depth_detail=detail if detail and len(detail) > 1 else None,
        )
        if self.on_sample:
            self.on_sample(sample)

    def _depth_detail(self) -> dict[str, int | None] | None:
        """The backend's depth and its parts (``total`` is the depth), ``None`` where it cannot
        tell or the reading failed."""
        if not self.backend.capabilities.depth:
            return None
        try:  # a lost control connection is replaced at once; if that fails too, the next sample tries again
            return self.backend.reconnecting(self.backend.depth_detail, self.queue)
        except QueueError:
            return None

    def _result(self, status: RunStatus, error: str | None, backend_env: dict[str, Any]) -> RunResult:
        accounting, clock, caps = self.accounting, self.clock, self.backend.capabilities
        ledger = accounting.ledger.result()
        restarted = any(f.spec.kind == "restart-server" and f.outcome for f in self.timed_faults)
        durable = self.server.durable if self.server is not None else caps.durable
        explained = (
            LOST_IN_RESTART
            if restarted and not durable
            else LOST_UNCONFIRMED
            if accounting.producers_disrupted and not caps.confirmed_sends
            else None
        )
        loss_error, finding = loss_judgement(
            lost=ledger.lost,
            at_least_once=caps.acks and caps.redelivers_on_crash,
            backend=self.backend.name,
            explained=explained,
        )
        if status == RunStatus.SUCCEEDED and loss_error:
            status, error = RunStatus.FAILED, loss_error  # an at-least-once backend lost events: not a success
        drain_s = drain_seconds(
            t0_ns=clock.t0_ns if clock else 0, last_new_ns=accounting.tally.last_new_ns, unique=ledger.unique
        )
        summary = summarise(
            run_id=self.run_id,
            spec=self.spec,
            status=status,
            error=error,
            ledger=ledger,
            drain_s=drain_s,
            latency=accounting.totals["e2e"],
            latency_from_send=accounting.totals["from_send"],
            publish=accounting.totals["publish"],
            poison=accounting.tally.poison,
            injected_poison=sum(f.spec.count for f in self.timed_faults if f.spec.kind == "poison" and f.outcome),
            killed_workers=accounting.killed_workers(),
            recovered_at_end=accounting.tally.recovered_at_end,
            stuck=self.drain.stuck if self.drain else None,
            findings=[text for text in (finding, self.drain_error) if text and text != error],
        )
        if self.timed_faults or accounting.markers:
            summary.update(
                fault_figures(
                    faults=[f.report() for f in self.timed_faults],
                    samples=accounting.samples,
                    offered_eps=self.spec.rate_eps,
                    reconnects=accounting.reconnects,
                    replaced=self.supervisor.replaced,
                    resend_bound=accounting.resend_bound,
                    markers=[m.as_dict() for m in accounting.markers],
                )
            )
            summary["guarantee"] = caps.guarantee()
            summary["redelivered"] = max(0, ledger.duplicates - accounting.resend_bound)
            summary["contradictions"] = guarantee_contradictions(
                guarantee=caps.guarantee(),
                lost=ledger.lost,
                duplicates=ledger.duplicates,
                resend_bound=accounting.resend_bound,
                loss_explained=explained is not None,
                redelivery_causes=accounting.reconnects
                + len(accounting.kills)
                + sum(1 for f in self.timed_faults if f.outcome and f.spec.kind in REDELIVERY_CAUSES),
            )
        if self.spec.steady and clock is not None:
            summary.update(
                steady_figures(
                    spec=self.spec,
                    samples=accounting.samples,
                    latency=accounting.totals["e2e"],
                    counts=accounting.steady_counts(
                        t0_ns=clock.t0_ns, window_ns=clock.window_ns, sent_total=sum(self.worker_ctx.sent)
                    ),
                    send_delay=accounting.totals["send_delay"],
                    publish=accounting.totals["publish"],
                )
            )
        env = environment.collect(backend_env)
        env["capabilities"] = self.backend.capabilities.as_dict()
        return RunResult(self.run_id, self.spec, status, error, summary, accounting.samples, env, ledger)


class _Box:
    """A ``.value`` holder for thread workers (processes use a shared ``multiprocessing.Value``)."""

    def __init__(self, value: int) -> None:
        self.value = value
