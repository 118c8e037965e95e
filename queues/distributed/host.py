"""A load host's side of a distributed run: ``run_share`` forks the workers of its share as the
local runner forks them, waits at the start barrier for the coordinator's start time (converted
with this host's clock offset), and sends a ``ShareReport`` every ``REPORT_S`` over its
``ShareChannel`` until told to stop.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from queues.backends import Backend
from queues.distributed.plan import Share
from queues.distributed.reports import ShareReport
from queues.errors import QueueError
from queues.measurement.clocks import ClockOffset
from queues.measurement.histograms import encode, merge_encoded, new_histogram
from queues.workers.channel import SharedFlag
from queues.workers.context import WorkerContext
from queues.workers.reports import CONSUMER, PRODUCER, BatchReport, Histograms, Message
from queues.workers.supervision import Supervisor
from queues.workload.spec import WorkloadSpec

REPORT_S = 0.5  # a host reports this often


class ShareChannel(Protocol):
    """A host's transport to the coordinator (``experiments.hosts.distribution``)."""

    def joined(self, offset: ClockOffset) -> None:
        """The share's workers are ready; ``offset`` is this host's clock offset."""

    def start_signal(self) -> tuple[int, list[int]] | None:
        """(start time on the reference clock in ns, latency shifts by producer) once set."""

    def stopped(self) -> bool:
        """The coordinator told the hosts to stop (or the run ended)."""

    def report(self, report: ShareReport) -> None: ...


class _Relay:
    """The host's worker messages, kept until the next report; its own e2e histogram."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.e2e = new_histogram()

    def __call__(self, message: Message) -> None:
        self.messages.append(message)
        encoded = (
            message.encoded
            if isinstance(message, Histograms)
            else (message.histograms if isinstance(message, BatchReport) else None)
        )
        if encoded and "e2e" in encoded:
            merge_encoded(self.e2e, encoded["e2e"])

    def take(self) -> list[Message]:
        taken, self.messages = self.messages, []
        return taken


def run_share(
    spec: WorkloadSpec,
    backend: Backend,
    *,
    queue: str,
    share: Share,
    channel: ShareChannel,
    offset: ClockOffset,
    mp_context: Any,
    report_s: float = REPORT_S,
) -> str:
    """Run this host's ``share`` of a distributed run to its end; what happened, in words."""
    relay = _Relay()
    context = WorkerContext(
        spec,
        backend,
        queue,
        None,  # type: ignore[arg-type]
        SharedFlag(mp_context),
        SharedFlag(mp_context),
        mp_context.Value("q", 0, lock=False),
        mp_context.Array("q", spec.producers, lock=False),
        latency_shift_ns=mp_context.Array("q", spec.producers, lock=False),
    )
    supervisor = Supervisor(mp_context=mp_context, context=context, threads=False, on_message=relay)
    seq, error = 0, None

    def report(final: bool = False) -> None:
        nonlocal seq
        seq += 1
        channel.report(
            ShareReport(
                seq,
                relay.take(),
                {p: int(context.sent[p]) for p in share.producers},
                encode(relay.e2e) if relay.e2e.get_total_count() else b"",
                final,
                error,
            )
        )

    try:
        for index in share.consumers:
            supervisor.spawn(CONSUMER, index)
        for index in share.producers:
            supervisor.spawn(PRODUCER, index)
        supervisor.await_ready()
        channel.joined(offset)
        while (signal := channel.start_signal()) is None:
            if channel.stopped():
                return "stopped before the start"
            supervisor.check()
            time.sleep(0.05)
        start_ns, shifts = signal
        context.latency_shift_ns[:] = shifts
        t0_ns = start_ns - round(offset.offset_s * 1e9)
        context.t0_ns.value = t0_ns
        time.sleep(max(0.0, (t0_ns - time.time_ns()) / 1e9))
        context.start.set()
        next_report = time.monotonic() + report_s
        while True:
            supervisor.pump(0.005)
            supervisor.check()
            if time.monotonic() >= next_report:
                if channel.stopped():
                    break
                report()
                next_report += report_s
    except QueueError as exc:
        error = str(exc)
    finally:
        context.stop.set()
        context.start.set()
        supervisor.stop()
        supervisor.reap()
        report(final=True)
    return f"failed: {error}" if error else "done"
