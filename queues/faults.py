"""Faults injected into a run, as pluggable objects the runner drives.

A ``Fault`` is told three things: ``check`` before anything starts (refuse a backend it cannot
apply to), ``before_start`` once the workers are ready and before the producers start, and
``poll`` on every turn of the runner's watch loop, where it decides from the run's state
whether its moment has come. Adding a kind of fault is adding a class; the runner does not
change. ``Faults`` is the declarative form the callers pass (tests, services), turned into fault
objects by ``build``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from queues.accounting import Accounting
from queues.backends import Backend
from queues.errors import NotSupported
from queues.events import encode_events, split_messages
from queues.messages import CONSUMER, PRODUCER
from queues.supervision import Supervisor


@dataclass(frozen=True)
class Faults:
    """Faults to inject, for the fault experiments and the at-least-once tests.

    ``kill_consumer_after``: once that many events were reported, SIGKILL consumer 0 (mid-batch:
    it is busy) and start a replacement, as a supervisor would.
    """

    kill_consumer_after: int | None = None
    #: Malformed messages sent into the queue before the producers start.
    poison_messages: int = 0


@dataclass(frozen=True)
class RunHandle:
    """What a fault may act on: the run's backend and queue, its workers, its counts."""

    backend: Backend
    queue: str
    supervisor: Supervisor
    accounting: Accounting


class Fault(Protocol):
    def check(self, backend: Backend) -> None:
        """Raise ``NotSupported`` if this fault cannot be applied to ``backend``."""

    def before_start(self, run: RunHandle) -> None:
        """Act once the workers are ready, before the producers start."""

    def poll(self, run: RunHandle) -> None:
        """Act if the moment has come; called on every turn of the watch loop (keep it cheap)."""


class FaultHooks:
    """The ``Fault`` hooks that do nothing, for a fault to override the moments it acts at: a
    fault acts before the start, or on a poll, rarely both, and most take any backend."""

    def check(self, backend: Backend) -> None:
        return None

    def before_start(self, run: RunHandle) -> None:
        return None

    def poll(self, run: RunHandle) -> None:
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
        run.supervisor.kill(victim, reason=f"fault: kill after {self.after_events:,} events")
        run.supervisor.spawn(CONSUMER, run.accounting.spec.consumers)  # the supervisor's replacement


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
