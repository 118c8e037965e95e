"""Faults injected into a run, as pluggable objects the runner drives.

A ``Fault`` is told four things: ``check`` before anything starts (refuse a backend it cannot
apply to), ``before_start`` once the workers are ready and before the producers start, ``poll``
on every turn of the runner's watch loop, where it decides from the run's state whether its
moment has come, and ``end`` when the run stops (undo what must not outlive it). Adding a kind
of fault is adding a class; the runner does not change.

The faults of an experiment (``WorkloadSpec.faults``, ``KIND@T[:ARG]``) are ``TimedFault``s built
by ``from_spec``: each acts at its time, records a marker (what, on what, with what outcome) and
reports itself in the summary. A fault that cannot be applied (no permission to kill, the
server refused) raises ``FaultFailed``, which fails the run with that reason: a run never
reports a clean outcome for a fault that never happened. ``Faults`` is the older declarative
form of the tests (a kill after N events, poison before the start), built by ``build``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from queues.backends import Backend
from queues.errors import NotSupported, QueueError
from queues.faults.servers import private_server
from queues.measurement.ledger import Ledger
from queues.workers.reports import CONSUMER, PRODUCER
from queues.workers.supervision import Worker
from queues.workload.events import encode_events, split_messages
from queues.workload.faults import (
    CUT_CONNECTIONS,
    KILL_CONSUMER,
    KILL_PRODUCER,
    PAUSE_CONSUMER,
    POISON,
    RESTART_SERVER,
    FaultSpec,
)

#: How long ``cut-connections`` looks for the run's connections on the server before it gives
#: up (a connection the broker lists a moment after it opened; ``rabbitmqctl`` takes seconds).
CUT_SEARCH_S = 15.0


@dataclass(frozen=True)
class Faults:
    """Faults to inject, for the fault experiments and the at-least-once tests.

    ``kill_consumer_after``: once that many events were reported, SIGKILL consumer 0 (mid-batch:
    it is busy) and start a replacement, as a supervisor would.
    """

    kill_consumer_after: int | None = None
    #: Malformed messages sent into the queue before the producers start.
    poison_messages: int = 0


class FaultFailed(QueueError):
    """A fault could not be applied; the run fails with this reason."""


class RunWorkers(Protocol):
    """What a fault may do to the run's workers (``queues.workers.supervision.Supervisor``): find
    one, kill it (and have it replaced)."""

    @property
    def workers(self) -> list[Worker]: ...

    @property
    def replace_after_s(self) -> float: ...

    def find(self, role: str, index: int) -> Worker: ...

    def kill(self, worker: Worker, *, reason: str, replace_after_s: float | None = None) -> None: ...


class RunCounts(Protocol):
    """What a fault reads and writes of the run's accounting (``queues.run.accounting.Accounting``,
    which the runner passes; the runner's layer is above the faults'): the ledger's counts, and a
    marker in the samples."""

    ledger: Ledger

    def mark(self, t_s: float, kind: str, target: str, outcome: str) -> object: ...


@dataclass(frozen=True)
class RunHandle:
    """What a fault may act on: the run's backend and queue, its workers, its counts, the
    private server it runs on (``None`` unless a fault needs one), and the run's clock."""

    backend: Backend
    queue: str
    supervisor: RunWorkers
    accounting: RunCounts
    server: Any = None  # queues.faults.servers.PrivateServer
    elapsed_s: Callable[[], float] = field(default=lambda: 0.0)

    def mark(self, kind: str, target: str, outcome: str, t_s: float | None = None) -> None:
        """A marker in the run's samples, now (or at ``t_s``)."""
        self.accounting.mark(self.elapsed_s() if t_s is None else t_s, kind, target, outcome)


class Fault(Protocol):
    def check(self, backend: Backend) -> None:
        """Raise ``NotSupported`` if this fault cannot be applied to ``backend``."""

    def before_start(self, run: RunHandle) -> None:
        """Act once the workers are ready, before the producers start."""

    def poll(self, run: RunHandle) -> None:
        """Act if the moment has come; called on every turn of the watch loop (keep it cheap)."""

    def end(self, run: RunHandle) -> None:
        """The run stops: undo what must not outlive it (a paused process)."""


class FaultHooks:
    """The ``Fault`` hooks that do nothing, for a fault to override the moments it acts at: a
    fault acts before the start, or on a poll, rarely both, and most take any backend."""

    def check(self, backend: Backend) -> None:
        return None

    def before_start(self, run: RunHandle) -> None:
        return None

    def poll(self, run: RunHandle) -> None:
        return None

    def end(self, run: RunHandle) -> None:
        return None


class SignalsAWorker(FaultHooks):
    """A fault that signals a worker process: refused where the workers are threads."""

    def check(self, backend: Backend) -> None:
        if not backend.capabilities.processes:
            raise NotSupported(f"{backend.name} runs its workers as threads, which cannot be signalled")


class KillConsumer(SignalsAWorker):
    """SIGKILL consumer 0 once ``after_events`` were received, and start a replacement."""

    def __init__(self, after_events: int) -> None:
        self.after_events = after_events
        self.done = False

    def poll(self, run: RunHandle) -> None:
        if self.done or run.accounting.ledger.received < self.after_events:
            return
        self.done = True
        victim = run.supervisor.workers[0]  # consumers are started first
        if victim.role != CONSUMER or victim.killed:
            return
        run.supervisor.kill(victim, reason=f"fault: kill after {self.after_events:,} events", replace_after_s=0)


class PauseProducer(SignalsAWorker):
    """SIGSTOP producer ``index`` once ``after_events`` were received, SIGCONT it ``pause_s``
    later: a producer that stalls (a GC pause, a descheduled VM) and then catches up. Its
    schedule keeps running meanwhile, so the stall shows in the send delay and the samples'
    send rate, and the summary must flag it."""

    def __init__(self, *, pause_s: float = 1.0, after_events: int = 1, index: int = 0) -> None:
        self.pause_s, self.after_events, self.index = pause_s, after_events, index
        self.resume_at: float | None = None
        self.pid: int | None = None
        self.done = False

    def poll(self, run: RunHandle) -> None:
        if self.resume_at is not None and time.monotonic() >= self.resume_at:
            self.resume()
        if self.done or run.accounting.ledger.received < self.after_events:
            return
        self.done = True
        producer = run.supervisor.find(PRODUCER, self.index)
        if producer.pid is None or producer.dead():
            return
        self.pid = producer.pid
        os.kill(self.pid, signal.SIGSTOP)
        self.resume_at = time.monotonic() + self.pause_s

    def resume(self) -> None:
        """SIGCONT the paused producer (idempotent)."""
        if self.pid is not None and self.resume_at is not None:
            self.resume_at = None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)


class SendPoison(FaultHooks):
    """Send ``count`` messages that decode to nothing before the producers start."""

    BODY = b"not an imqueue event"

    def __init__(self, count: int) -> None:
        self.count = count

    def before_start(self, run: RunHandle) -> None:
        _send(run, [self.BODY] * self.count)


class PauseConsumer(SignalsAWorker):
    """SIGSTOP consumer 0 once ``after_events`` were received, and never SIGCONT it: a consumer
    that stalls holding what it took (prefetched, claimed, in an open transaction). The run's
    stop finds it hung and kills it, which makes the server release what it held for the final
    drain. (The seed of a pause-and-resume fault.)"""

    def __init__(self, after_events: int) -> None:
        self.after_events = after_events
        self.paused_pid: int | None = None

    def poll(self, run: RunHandle) -> None:
        if self.paused_pid is not None or run.accounting.ledger.received < self.after_events:
            return
        victim = run.supervisor.find(CONSUMER, 0)
        if victim.pid is None or victim.dead():
            return
        os.kill(victim.pid, signal.SIGSTOP)
        self.paused_pid = victim.pid


def _records(flat: int, value: int) -> list[bytes]:
    """One message holding the event record of flat index ``flat`` (producer 0's share) with
    ``value``: a well-formed record, right or wrong."""
    now_ns = time.time_ns()
    records = encode_events(0, np.array([flat]), np.array([value]), now_ns, now_ns)
    return list(split_messages(records, 1))


class SendCorrupt(FaultHooks):
    """Send ``count`` well-formed event records whose value is wrong (event 0 carrying 2 instead
    of 1) before the producers start: what a bit flip or a buggy producer would deliver."""

    def __init__(self, count: int) -> None:
        self.count = count

    def before_start(self, run: RunHandle) -> None:
        _send(run, _records(0, 2) * self.count)


class DuplicateAtEnd(FaultHooks):
    """Once every event was counted, send a copy of event 0 with a fresh producer: a redelivery
    arriving at the very end, which only a final drain can see."""

    def __init__(self) -> None:
        self.sent = False

    def poll(self, run: RunHandle) -> None:
        if not self.sent and run.accounting.ledger.complete:
            self.sent = True
            _send(run, _records(0, 1))


def _send(run: RunHandle, messages: list[bytes]) -> None:
    producer = run.backend.producer(run.queue)
    try:
        producer.send_batch(messages)
    finally:
        producer.close()


def build(faults: Faults) -> list[Fault]:
    """The fault objects ``faults`` declares, in the order they are applied."""
    built: list[Fault] = []
    if faults.poison_messages:
        built.append(SendPoison(faults.poison_messages))
    if faults.kill_consumer_after is not None:
        built.append(KillConsumer(faults.kill_consumer_after))
    return built


# -- the faults of an experiment (``WorkloadSpec.faults``) ---------------------------------------


class TimedFault(FaultHooks):
    """A fault of the spec, applied once ``at_s`` seconds into the run by ``apply``, which
    returns its outcome in words (or raises: the run fails with ``FaultFailed``). Slow ones
    (a server asked to close connections, a server restarted) run ``apply`` on a thread of their
    own, so that the runner goes on reading the workers' reports meanwhile."""

    background = False

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self.applied_at_s: float | None = None
        self.outcome: str | None = None
        self._thread: threading.Thread | None = None
        self._result: tuple[str | None, BaseException | None] = (None, None)
        self.run_ended = threading.Event()  # a slow fault still at work stops trying
        self.late_error: str | None = None  # it failed only as the run ended (the runner fails the run)

    def apply(self, run: RunHandle) -> str:
        raise NotImplementedError

    def follow_up(self, run: RunHandle) -> None:
        """Called on every poll once applied (a pause's resume)."""

    def poll(self, run: RunHandle) -> None:
        if self._thread is not None:
            if not self._thread.is_alive():
                self._thread = None
                self._record(run, *self._result)
            return
        if self.applied_at_s is not None:
            self.follow_up(run)
            return
        if run.elapsed_s() < self.spec.at_s:
            return
        self.applied_at_s = round(run.elapsed_s(), 3)
        if self.background:
            self._thread = threading.Thread(
                target=self._apply_in_background, args=(run,), daemon=True, name=f"fault {self.spec.text()}"
            )
            self._thread.start()
        else:
            self._record(run, *self._attempt(run))

    def _attempt(self, run: RunHandle) -> tuple[str | None, BaseException | None]:
        try:
            return self.apply(run), None
        except (OSError, QueueError) as exc:
            return None, exc

    def _apply_in_background(self, run: RunHandle) -> None:
        self._result = self._attempt(run)

    def _record(self, run: RunHandle, outcome: str | None, error: BaseException | None) -> None:
        if error is not None:
            self.outcome = f"could not be applied: {error}"
            run.mark(self.spec.kind, self.spec.target_label(), self.outcome, t_s=self.applied_at_s)
            raise FaultFailed(f"fault {self.spec.text()} could not be applied: {error}") from error
        self.outcome = outcome
        run.mark(self.spec.kind, self.spec.target_label(), outcome or "", t_s=self.applied_at_s)

    def end(self, run: RunHandle) -> None:
        self.run_ended.set()
        if self._thread is not None:  # a slow fault still at work when the run ended: let it finish
            self._thread.join(timeout=CUT_SEARCH_S + 30)
            self._thread = None
            outcome, error = self._result
            self.outcome = outcome if error is None else f"could not be applied: {error}"
            if error is not None:
                self.late_error = f"fault {self.spec.text()} could not be applied: {error}"
            run.mark(self.spec.kind, self.spec.target_label(), self.outcome or "", t_s=self.applied_at_s)

    def report(self) -> dict[str, Any]:
        """The fault in the summary: what, when it was due and applied, on what, its outcome
        (``None`` and ``applied_at_s`` ``None``: the run ended before its time)."""
        return {
            "fault": self.spec.text(),
            "kind": self.spec.kind,
            "at_s": self.spec.at_s,
            "applied_at_s": self.applied_at_s,
            "target": self.spec.target_label(),
            "outcome": self.outcome,
        }


class KillWorkerAt(TimedFault, SignalsAWorker):
    """``kill-consumer`` / ``kill-producer``: SIGKILL the worker; the supervisor replaces it."""

    def apply(self, run: RunHandle) -> str:
        victim = run.supervisor.find(self.spec.role, self.spec.target)
        if victim.pid is None or victim.dead() or victim.killed:
            raise FaultFailed(f"{self.spec.target_label()} is not running (pid {victim.pid})")
        pid = victim.pid
        run.supervisor.kill(victim, reason=f"fault {self.spec.text()}")
        delay = run.supervisor.replace_after_s
        return f"SIGKILL pid {pid}; a replacement starts {delay:g} s later"


class PauseConsumerAt(TimedFault, SignalsAWorker):
    """``pause-consumer``: SIGSTOP the consumer for ``duration_s``, then SIGCONT it."""

    def __init__(self, spec: FaultSpec) -> None:
        super().__init__(spec)
        self.paused_pid: int | None = None

    def apply(self, run: RunHandle) -> str:
        victim = run.supervisor.find(CONSUMER, self.spec.target)
        if victim.pid is None or victim.dead():
            raise FaultFailed(f"{self.spec.target_label()} is not running")
        os.kill(victim.pid, signal.SIGSTOP)
        self.paused_pid = victim.pid
        return f"SIGSTOP pid {victim.pid} for {self.spec.duration_s:g} s"

    def follow_up(self, run: RunHandle) -> None:
        if self.paused_pid is not None and run.elapsed_s() >= self.spec.at_s + self.spec.duration_s:
            self._resume()
            run.mark("resume", self.spec.target_label(), f"SIGCONT after {self.spec.duration_s:g} s")

    def _resume(self) -> None:
        pid, self.paused_pid = self.paused_pid, None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def end(self, run: RunHandle) -> None:
        self._resume()  # the run ended within the pause: never leave a stopped process behind


class CutConnectionsAt(TimedFault):
    """``cut-connections``: the server closes the run's workers' connections (only this run's:
    ``Backend.cut_connections``); the workers reconnect, and each reconnect is a marker."""

    background = True

    def check(self, backend: Backend) -> None:
        if not backend.can_cut_connections():
            raise NotSupported(f"{backend.name} cannot take it: {backend.cut_refusal}")

    def apply(self, run: RunHandle) -> str:
        deadline = time.monotonic() + CUT_SEARCH_S
        while (closed := run.backend.cut_connections(run.queue)) == 0:
            if self.run_ended.is_set():
                raise FaultFailed("the run's workers had finished before the server showed their connections")
            if time.monotonic() > deadline:
                raise FaultFailed(f"the server showed none of the run's connections within {CUT_SEARCH_S:g} s")
            time.sleep(0.2)
        return f"the server closed {closed} connection(s) of the run"


class RestartServerAt(TimedFault):
    """``restart-server``: crash the run's private server (SIGKILL) and start it again on the
    same port and data; what survives is what its persistence keeps. On the runner's own thread,
    not one of its own: a private server dies with the thread that started it (PR_SET_PDEATHSIG
    follows the thread), and the restart takes a fraction of a second."""

    def check(self, backend: Backend) -> None:
        private_server(backend.name, persistence=self.spec.persistence)  # refuses a kind or mode it lacks; no I/O

    def apply(self, run: RunHandle) -> str:
        if run.server is None:
            raise FaultFailed("the run has no private server to restart (run it through queues.run.launch.run_spec)")
        down_s = run.server.restart()
        kept = "acked messages survive" if run.server.durable else "what the queue held is lost"
        return f"crashed (SIGKILL) and back in {down_s:.1f} s; persistence {run.server.persistence}: {kept}"


class PoisonAt(TimedFault):
    """``poison``: ``count`` malformed messages sent into the queue."""

    def apply(self, run: RunHandle) -> str:
        _send(run, [SendPoison.BODY] * self.spec.count)
        return f"{self.spec.count} malformed message(s) sent"


_TIMED: dict[str, type[TimedFault]] = {
    KILL_CONSUMER: KillWorkerAt,
    KILL_PRODUCER: KillWorkerAt,
    PAUSE_CONSUMER: PauseConsumerAt,
    CUT_CONNECTIONS: CutConnectionsAt,
    RESTART_SERVER: RestartServerAt,
    POISON: PoisonAt,
}


def from_spec(specs: tuple[FaultSpec, ...]) -> list[TimedFault]:
    """The fault objects of an experiment's faults, in their order."""
    return [_TIMED[spec.kind](spec) for spec in specs]


def check_faults(specs: tuple[FaultSpec, ...], backend: Backend) -> None:
    """Raise ``NotSupported`` (one line) for a fault ``backend`` cannot take, before anything
    runs or is stored."""
    for fault in from_spec(specs):
        try:
            fault.check(backend)
        except NotSupported as exc:
            raise NotSupported(f"fault {fault.spec.text()}: {exc}") from None
