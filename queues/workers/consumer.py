"""A consumer worker: receives batches, counts them (``queues.workers.counting``), reports each
batch to the runner *before* it acks it, so that the runner's ledger survives the consumer being
killed, and acks (``settle``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from queues.errors import BackendUnavailable
from queues.measurement.ledger import Shares
from queues.workers.channel import ReportChannel
from queues.workers.context import WorkerContext
from queues.workers.counting import HistBuffer, count_bodies
from queues.workers.link import Link
from queues.workers.reports import CONSUMER, BatchReport, Done, Histograms, Ready

RECEIVE_TIMEOUT_S = 0.05
REPORT_MAX_DELAY_S = 0.002


def consume(index: int, ctx: WorkerContext) -> None:
    spec, channel = ctx.spec, ctx.channel
    shares = Shares.of(spec)
    link = Link(CONSUMER, index, ctx, lambda: ctx.backend.for_worker().consumer(ctx.queue))
    channel.send(Ready(CONSUMER, index, os.getpid()))
    ctx.start.wait()
    window = ctx.window_ns()
    shift = None if ctx.latency_shift_ns is None else np.array(ctx.latency_shift_ns[:], dtype=np.int64)
    hists = HistBuffer("e2e", "e2e_warmup", "from_send", "e2e_negative")
    pending = _PendingReport(index, channel, link, flush_events=spec.batch * spec.events_per_message)
    if getattr(link.client, "calls_back", False):  # a task library's worker calls us (queues.backends.libraries)
        link.client.consume_until(ctx.stop, index, channel, shares, hists, window, spec.steady, shift)
    while not ctx.stop.is_set():
        try:
            batch = link.client.receive_batch(spec.batch, RECEIVE_TIMEOUT_S)
            if batch:
                pending.add(batch, *count_bodies(batch.bodies, shares, hists, window, spec.steady, shift))
            if pending.due(idle=not batch):
                pending.flush(hists.flush() if hists.due() else None)
            elif not batch and hists.due():
                channel.send(Histograms(CONSUMER, index, hists.flush()))
        except BackendUnavailable as exc:
            # what was received is counted now; its acks died with the connection, so the server
            # delivers it again where it keeps un-acked messages (duplicates, counted as such)
            pending.flush(None, settle_them=False)
            link.reopen(exc)
    try:
        pending.flush(None)
    except BackendUnavailable:
        pass  # counted; the acks are lost with the connection, and the final drain reads what comes back
    link.close()
    channel.send(Histograms(CONSUMER, index, hists.flush()))
    channel.send(Done(CONSUMER, index))


class _PendingReport:
    """Received batches not yet reported and acked.

    Each report goes to the runner *before* its batches are acked (at-least-once accounting).
    Small batches (a steady flow) are gathered for up to ``REPORT_MAX_DELAY_S`` or one full
    call's worth of events, so that the runner handles a few hundred reports a second instead of
    one per message; a full batch (a burst) is reported at once.
    """

    def __init__(self, index: int, channel: ReportChannel, link: Link, *, flush_events: int) -> None:
        self.index, self.channel, self.link = index, channel, link
        self.flush_events = flush_events
        self._reset()

    def _reset(self) -> None:
        self.batches: list[tuple[Any, list[int]]] = []
        self.flats: list[np.ndarray] = []
        self.raw_sum = self.corrupt = self.poison = self.events = self.received_ns = self.window_events = 0
        self.since = 0.0

    def add(
        self,
        batch: Any,
        poison: list[int],
        flat: np.ndarray,
        raw_sum: int,
        corrupt: int,
        received_ns: int,
        window_events: int,
    ) -> None:
        if not self.batches:
            self.since = time.monotonic()
        self.batches.append((batch, poison))
        self.flats.append(flat)
        self.raw_sum += raw_sum
        self.corrupt += corrupt
        self.poison += len(poison)
        self.events += len(flat) + corrupt
        self.received_ns = received_ns
        self.window_events += window_events

    def due(self, *, idle: bool) -> bool:
        if not self.batches:
            return False
        return idle or self.events >= self.flush_events or time.monotonic() - self.since >= REPORT_MAX_DELAY_S

    def flush(self, hists: dict[str, bytes] | None, *, settle_them: bool = True) -> None:
        """Report what is pending, then ack it (``settle_them``). Emptied before the acks, so
        an ack that fails on a lost connection never gets the same batches reported twice."""
        batches = self.batches
        if batches:
            flat = self.flats[0] if len(self.flats) == 1 else np.concatenate(self.flats)
            self.channel.send(
                BatchReport(
                    self.index,
                    flat.tobytes(),
                    self.raw_sum,
                    self.corrupt,
                    self.poison,
                    self.received_ns,
                    hists,
                    self.window_events,
                )
            )
        elif hists:
            self.channel.send(Histograms(CONSUMER, self.index, hists))
        self._reset()
        if settle_them:
            for batch, poison in batches:
                settle(self.link.client, batch, poison)


def settle(consumer: Any, batch: Any, poison: list[int]) -> None:
    """Ack what was counted; set poison messages aside as dead letters (never requeue them:
    they would come back forever)."""
    if not poison:
        consumer.ack(batch)
        return
    bad = set(poison)
    consumer.nack(batch.subset(poison), requeue=False)
    consumer.ack(batch.subset([i for i in range(len(batch)) if i not in bad]))
