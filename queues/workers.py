"""Producer and consumer workers: what runs in each forked process (or thread).

Workers talk to the runner over one ``ReportChannel`` each, in the typed messages of
``queues.messages``. A consumer reports each batch it
received (the events' flat indices and raw sum) *before* it acks it, so that the runner's
ledger survives the consumer being killed. Latency is recorded in each worker's own
HdrHistograms and shipped encoded every ``HIST_FLUSH_S``:

- consumers: ``e2e`` (receipt minus intended send time, events of the measured window),
  ``e2e_warmup`` (the same for warm-up events), ``from_send`` (receipt minus actual send time);
- producers: ``send_delay`` and ``send_delay_warmup`` (actual minus intended send time) and
  ``publish`` (duration of each send call).
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from queues.backends.base import Backend
from queues.events import decode_bodies, encode_events, split_messages
from queues.ledger import Shares, index_records
from queues.lifeline import bind_to_runner
from queues.messages import (
    CONSUMER,
    PRODUCER,
    BatchReport,
    Done,
    Histograms,
    Message,
    Ready,
    WorkerFailed,
    from_wire,
    to_wire,
)
from queues.metrics import encode, new_histogram, record_many
from queues.schedule import Schedule
from queues.workload import WorkloadSpec

HIST_FLUSH_S = 0.2
RECEIVE_TIMEOUT_S = 0.05
REPORT_MAX_DELAY_S = 0.002
SEND_TICK_S = 0.0005
CATCH_UP_CALLS = 64  # full calls a producer behind its schedule encodes at once


class ReportChannel:
    """One worker's one-way pipe to the runner.

    Every worker has its own, so no lock is shared between processes: a worker SIGKILLed in the
    middle of a report cannot leave a lock held and the others blocked. ``send`` writes
    synchronously (no feeder thread as in ``multiprocessing.Queue``), so a report is in the
    kernel's pipe before the consumer acks: a SIGKILL right after cannot lose it.
    """

    def __init__(self, ctx: Any) -> None:
        self.reader, self.writer = ctx.Pipe(duplex=False)

    def send(self, message: Message) -> None:
        """Raises ``RunnerGone`` once the runner's end is closed (the runner died)."""
        try:
            self.writer.send(to_wire(message))
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise RunnerGone("the runner's report pipe is closed") from exc


class RunnerGone(Exception):
    """The runner is gone: nobody reads this worker's reports, so the worker ends."""


def receive(reader: Any) -> Message:
    """The next message on a ``ReportChannel``'s reader (blocks; ``EOFError`` once the worker
    is gone)."""
    return from_wire(reader.recv())


class SharedFlag:
    """A one-way flag between processes without a lock (``multiprocessing.Event`` takes a
    shared lock in ``is_set``: a worker SIGKILLed inside it would block every other worker and
    the runner). Waiting polls: it happens once per worker, at the start."""

    POLL_S = 0.0005

    def __init__(self, ctx: Any) -> None:
        self._value = ctx.Value("b", 0, lock=False)

    def set(self) -> None:
        self._value.value = 1

    def is_set(self) -> bool:
        return bool(self._value.value)

    def wait(self) -> None:
        while not self._value.value:
            time.sleep(self.POLL_S)


@dataclass
class WorkerContext:
    """Everything a worker needs, inherited through fork (never pickled)."""

    spec: WorkloadSpec
    backend: Backend
    queue: str
    channel: ReportChannel
    start: Any  # SharedFlag (threading.Event for threads): producers begin
    stop: Any  # SharedFlag (threading.Event for threads): consumers finish, producers abandon the rest
    t0_ns: Any  # shared Value: the run's start on time.time_ns(), set before ``start``
    sent: Any  # shared Array: events sent so far, one slot per producer (read by the sampler)
    profile_dir: str | None = None  # write a cProfile of each worker there (bench/)

    def window_ns(self) -> tuple[int, int]:
        """The measured window ``[start, end)`` of intended send times, in ns."""
        spec, t0 = self.spec, self.t0_ns.value
        if not spec.steady:
            return t0, 2**62
        begin = t0 + int(spec.warmup_s * 1e9)
        return begin, begin + int(spec.duration_s * 1e9)


def run_worker(role: str, index: int, ctx: WorkerContext) -> None:
    """Entry point of a worker process or thread; reports an error instead of raising."""
    work = _produce if role == PRODUCER else _consume
    try:
        if ctx.profile_dir:
            _profiled(work, index, ctx, f"{ctx.profile_dir}/{role}-{index}.prof")
        else:
            work(index, ctx)
    except RunnerGone:
        return  # nobody to report to; what this worker held returns to the queue as it closes
    except BaseException as exc:  # noqa: BLE001 - reported to the runner, which fails the run
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        try:
            ctx.channel.send(WorkerFailed(role, index, detail))
        except RunnerGone:
            return


def run_worker_process(role: str, index: int, ctx: WorkerContext, runner_pid: int, inherited: list[Any]) -> None:
    """Entry point of a forked worker: bound to its runner's life (``queues.lifeline``), then
    ``run_worker``. ``inherited`` are the report pipe readers fork copied into it."""
    bind_to_runner(runner_pid, inherited)
    run_worker(role, index, ctx)


def _profiled(work: Any, index: int, ctx: WorkerContext, path: str) -> None:
    import cProfile

    profile = cProfile.Profile()
    try:
        profile.runcall(work, index, ctx)
    finally:
        profile.dump_stats(path)


class _HistBuffer:
    """Latencies (us) gathered since the last flush, recorded into HdrHistograms at flush
    time: one vectorised ``record_many`` per flush rather than per batch."""

    def __init__(self, *names: str) -> None:
        self.names = names
        self.parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        self.last_flush = time.monotonic()

    def add(self, name: str, values_us: np.ndarray) -> None:
        if len(values_us):
            self.parts[name].append(values_us)

    def add_split(self, name: str, values_us: np.ndarray, measured: np.ndarray) -> None:
        """``values_us[measured]`` under ``name``, the rest under ``name + "_warmup"``."""
        if measured.all():
            self.add(name, values_us)
        else:
            self.add(name, values_us[measured])
            self.add(f"{name}_warmup", values_us[~measured])

    def due(self) -> bool:
        return any(self.parts.values()) and time.monotonic() - self.last_flush >= HIST_FLUSH_S

    def flush(self) -> dict[str, bytes]:
        """Encoded histograms of everything added since the last flush, by name."""
        encoded: dict[str, bytes] = {}
        by_parts: dict[tuple[int, ...], bytes] = {}
        for name, parts in self.parts.items():
            if not parts:
                continue
            key = tuple(id(p) for p in parts)  # the same arrays under two names: record once
            if key not in by_parts:
                hist = new_histogram()
                record_many(hist, np.concatenate(parts))
                by_parts[key] = encode(hist)
            encoded[name] = by_parts[key]
        self.parts = {name: [] for name in self.names}
        self.last_flush = time.monotonic()
        return encoded


def _produce(index: int, ctx: WorkerContext) -> None:
    producer = ctx.backend.for_worker().producer(ctx.queue)
    ctx.channel.send(Ready(PRODUCER, index, os.getpid()))
    ctx.start.wait()
    sender = _Sender(index, ctx, producer)
    if ctx.spec.steady:
        sender.follow_schedule(Schedule(ctx.spec, index))
    else:
        sender.burst()
    producer.close()
    sender.report(final=True)
    ctx.channel.send(Done(PRODUCER, index, sender.measured_sent, sender.last_send_ns, sender.last_window_send_ns))


class _Sender:
    """One producer's sending: encodes due events, sends them, records what it cost."""

    def __init__(self, index: int, ctx: WorkerContext, producer: Any) -> None:
        self.index, self.ctx, self.producer = index, ctx, producer
        self.base, self.count = ctx.spec.producer_shares()[index]
        self.chunk = ctx.spec.events_per_message * ctx.spec.batch
        self.window = ctx.window_ns()
        self.hists = _HistBuffer("send_delay", "send_delay_warmup", "publish")
        self.sent = self.measured_sent = self.last_send_ns = self.last_window_send_ns = 0

    def burst(self) -> None:
        for start in range(0, self.count, self.chunk):
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
        t0, epm, k = self.ctx.t0_ns.value, self.ctx.spec.events_per_message, 0
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
            self.producer.send_batch(split_messages(records[first:last], epm))
            durations_us.append((time.perf_counter_ns() - began) // 1000)
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
        self.ctx.sent[self.index] = self.sent
        self.last_send_ns = int(sent_ns[-1])
        if self.hists.due():
            self.report()

    def report(self, final: bool = False) -> None:
        if final or self.hists.due():
            self.ctx.channel.send(Histograms(PRODUCER, self.index, self.hists.flush()))


def _consume(index: int, ctx: WorkerContext) -> None:
    spec, channel = ctx.spec, ctx.channel
    shares = Shares.of(spec)
    consumer = ctx.backend.for_worker().consumer(ctx.queue)
    channel.send(Ready(CONSUMER, index, os.getpid()))
    ctx.start.wait()
    window = ctx.window_ns()
    hists = _HistBuffer("e2e", "e2e_warmup", "from_send")
    pending = _PendingReport(index, channel, consumer, flush_events=spec.batch * spec.events_per_message)
    if getattr(consumer, "calls_back", False):  # a task library's worker calls us (queues.backends.libraries)
        consumer.consume_until(ctx.stop, index, channel, shares, hists, window, spec.steady)  # type: ignore[attr-defined]
    while not ctx.stop.is_set():
        batch = consumer.receive_batch(spec.batch, RECEIVE_TIMEOUT_S)
        if batch:
            pending.add(batch, *count_bodies(batch.bodies, shares, hists, window, spec.steady))
        if pending.due(idle=not batch):
            pending.flush(hists.flush() if hists.due() else None)
        elif not batch and hists.due():
            channel.send(Histograms(CONSUMER, index, hists.flush()))
    pending.flush(None)
    consumer.close()
    channel.send(Histograms(CONSUMER, index, hists.flush()))
    channel.send(Done(CONSUMER, index))


def count_bodies(
    bodies: Any, shares: Shares, hists: _HistBuffer, window: tuple[int, int], steady: bool
) -> tuple[list[int], np.ndarray, int, int, int, int]:
    """What a consumer reports of ``bodies`` received now: the poison messages' indices, the
    events' flat indices, their raw sum, the corrupt records, the receipt time and the events of
    the measured window; their latencies go into ``hists``."""
    received_ns = time.time_ns()
    records, poison = decode_bodies(bodies)
    flat, raw_sum, corrupt = index_records(records, shares)
    _record_latency(hists, received_ns, records, window[0], steady)
    intended = records["intended_ns"]
    window_events = int(np.count_nonzero((intended >= window[0]) & (intended < window[1])))
    return poison, flat, raw_sum, corrupt, received_ns, window_events


class _PendingReport:
    """Received batches not yet reported and acked.

    Each report goes to the runner *before* its batches are acked (at-least-once accounting).
    Small batches (a steady flow) are gathered for up to ``REPORT_MAX_DELAY_S`` or one full
    call's worth of events, so that the runner handles a few hundred reports a second instead of
    one per message; a full batch (a burst) is reported at once.
    """

    def __init__(self, index: int, channel: ReportChannel, consumer: Any, *, flush_events: int) -> None:
        self.index, self.channel, self.consumer = index, channel, consumer
        self.flush_events = flush_events
        self._reset()

    def _reset(self) -> None:
        self.batches: list[tuple[Any, list[int]]] = []
        self.flats: list[np.ndarray] = []
        self.raw_sum = self.corrupt = self.poison = self.events = self.received_ns = self.window_events = 0
        self.since = 0.0

    def add(
        self, batch: Any, poison: list[int], flat: np.ndarray, raw_sum: int, corrupt: int, received_ns: int,
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

    def flush(self, hists: dict[str, bytes] | None) -> None:
        if self.batches:
            flat = self.flats[0] if len(self.flats) == 1 else np.concatenate(self.flats)
            self.channel.send(
                BatchReport(
                    self.index, flat.tobytes(), self.raw_sum, self.corrupt, self.poison, self.received_ns, hists,
                    self.window_events,
                )
            )
            for batch, poison in self.batches:
                settle(self.consumer, batch, poison)
        elif hists:
            self.channel.send(Histograms(CONSUMER, self.index, hists))
        self._reset()


def _record_latency(hists: _HistBuffer, received_ns: int, records: np.ndarray, window_start: int, steady: bool) -> None:
    intended = records["intended_ns"]
    e2e = (received_ns - intended) // 1000
    measured = intended >= window_start
    hists.add_split("e2e", e2e, measured)
    if steady:
        hists.add("from_send", ((received_ns - records["sent_ns"]) // 1000)[measured])
    else:
        hists.add("from_send", e2e)  # the intended time is the send time: recorded once at flush


def settle(consumer: Any, batch: Any, poison: list[int]) -> None:
    """Ack what was counted; set poison messages aside as dead letters (never requeue them:
    they would come back forever)."""
    if not poison:
        consumer.ack(batch)
        return
    bad = set(poison)
    consumer.nack(batch.subset(poison), requeue=False)
    consumer.ack(batch.subset([i for i in range(len(batch)) if i not in bad]))
