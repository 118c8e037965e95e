"""A producer worker: sends its share of the events, in a burst or on the spec's schedule, and
reports what it sent and what sending cost (``send_delay``, ``publish``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from queues.workers.context import WorkerContext
from queues.workers.counting import HistBuffer
from queues.workers.link import Link
from queues.workers.reports import PRODUCER, Done, Histograms, Ready
from queues.workload.events import encode_events, split_messages
from queues.workload.schedule import Schedule

SEND_TICK_S = 0.0005
CATCH_UP_CALLS = 64  # full calls a producer behind its schedule encodes at once


def produce(index: int, ctx: WorkerContext) -> None:
    link = Link(PRODUCER, index, ctx, lambda: ctx.backend.for_worker().producer(ctx.queue))
    ctx.channel.send(Ready(PRODUCER, index, os.getpid()))
    ctx.start.wait()
    sender = _Sender(index, ctx, link)
    if ctx.spec.steady:
        sender.follow_schedule(Schedule(ctx.spec, index))
    else:
        sender.burst()
    link.close()
    sender.report(final=True)
    ctx.channel.send(Done(PRODUCER, index, sender.measured_sent, sender.last_send_ns, sender.last_window_send_ns))


class _Sender:
    """One producer's sending: encodes due events, sends them, records what it cost.

    A replacement of a killed producer resumes its share after the events the shared ``sent``
    counter says were sent (updated after every call, so at most the killed one's last call is
    sent twice)."""

    def __init__(self, index: int, ctx: WorkerContext, link: Link) -> None:
        self.index, self.ctx, self.link = index, ctx, link
        self.base, self.count = ctx.spec.producer_shares()[index]
        self.chunk = ctx.spec.events_per_message * ctx.spec.batch
        self.window = ctx.window_ns()
        self.hists = HistBuffer("send_delay", "send_delay_warmup", "publish")
        self.last_send_ns = self.last_window_send_ns = 0
        self.sent = int(ctx.sent[index])  # 0, or where a killed predecessor stopped
        self.measured_sent = self._measured_before(self.sent)

    def _measured_before(self, sent: int) -> int:
        """Events of the measured window among this share's first ``sent`` (a predecessor's)."""
        if not sent or not self.ctx.spec.steady:
            return sent
        intended = self.ctx.t0_ns.value + Schedule(self.ctx.spec, self.index).offsets(0, sent)
        return int(np.count_nonzero((intended >= self.window[0]) & (intended < self.window[1])))

    def burst(self) -> None:
        for start in range(self.sent, self.count, self.chunk):
            if self.ctx.stop.is_set():
                return
            now_ns = time.time_ns()
            self.send(start, min(self.chunk, self.count - start), now_ns, now_ns)

    def follow_schedule(self, schedule: Schedule) -> None:
        """Send every event at (or, when behind, as soon as possible after) its intended time.

        A partial call waits for the next ``SEND_TICK_S`` tick, so that everything due by then
        goes in one call: at high rates one send per event would cost more CPU than the rate
        leaves. A full call (``batch`` messages) goes at once, tick or not: a producer that is
        behind, or sends one message a call (``--batch 1``), sends call after call until it is
        caught up, encoding up to ``CATCH_UP_CALLS`` calls' worth at once (numpy's cost per
        array, not per event, was what held a one-message-a-call producer near 1.5k events/s).
        The wait is not hidden: latency counts from the intended time.
        """
        t0, epm, k = self.ctx.t0_ns.value, self.ctx.spec.events_per_message, self.sent
        tick_ns, next_wake = int(SEND_TICK_S * 1e9), 0
        while k < self.count and not self.ctx.stop.is_set():
            now_ns = time.time_ns()
            due = schedule.due(now_ns - t0)
            n = min(due - k, self.chunk * CATCH_UP_CALLS)
            if due < self.count:
                n -= n % epm  # wait for a message to fill: that wait is part of its latency
            if n <= 0 or (n < self.chunk and now_ns < next_wake):
                wake_ns = max(t0 + schedule.offset_ns(min(k + epm, self.count) - 1), next_wake)
                time.sleep(max(0.0, (wake_ns - now_ns) / 1e9))
                continue
            self.send(k, n, t0 + schedule.offsets(k, n), now_ns)
            k += n
            next_wake = now_ns + tick_ns

    def send(self, start: int, n: int, intended_ns: Any, now_ns: int) -> None:
        """Send events ``start`` to ``start + n - 1`` in calls of ``batch`` messages, each
        call's events stamped with the time of that call (the first with ``now_ns``)."""
        seq = np.arange(start, start + n, dtype=np.int64)
        records = encode_events(self.index, seq, seq + (self.base + 1), intended_ns, now_ns)
        sent_ns, epm, durations_us = records["sent_ns"], self.ctx.spec.events_per_message, []
        for first in range(0, n, self.chunk):
            last = min(first + self.chunk, n)
            if first:
                sent_ns[first:last] = time.time_ns()
            began = time.perf_counter_ns()
            self.link.send_batch(split_messages(records[first:last], epm), last - first)
            durations_us.append((time.perf_counter_ns() - began) // 1000)
            self.ctx.sent[self.index] = self.sent + last  # per call: what a replacement resumes after
        self.hists.add("publish", np.array(durations_us))
        if self.ctx.spec.steady:
            intended = records["intended_ns"]
            in_window = (intended >= self.window[0]) & (intended < self.window[1])
            self.hists.add_split("send_delay", (sent_ns - intended) // 1000, in_window)
            if window_events := int(in_window.sum()):
                self.measured_sent += window_events
                self.last_window_send_ns = int(sent_ns[in_window][-1])
        else:
            self.measured_sent += n
        self.sent += n
        self.last_send_ns = int(sent_ns[-1])
        if self.hists.due():
            self.report()

    def report(self, final: bool = False) -> None:
        if final or self.hists.due():
            self.ctx.channel.send(Histograms(PRODUCER, self.index, self.hists.flush()))
