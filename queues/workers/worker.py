"""Producer and consumer workers: what runs in each forked process (or thread).

Workers talk to the runner over one ``ReportChannel`` each, in the typed messages of
``queues.workers.reports``. A consumer reports each batch it
received (the events' flat indices and raw sum) *before* it acks it, so that the runner's
ledger survives the consumer being killed. Latency is recorded in each worker's own
HdrHistograms and shipped encoded every ``HIST_FLUSH_S``:

- consumers: ``e2e`` (receipt minus intended send time, events of the measured window),
  ``e2e_warmup`` (the same for warm-up events), ``from_send`` (receipt minus actual send time);
- producers: ``send_delay`` and ``send_delay_warmup`` (actual minus intended send time) and
  ``publish`` (duration of each send call).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from queues.backends.base import Backend
from queues.errors import BackendUnavailable
from queues.measurement.histograms import encode, new_histogram, record_many
from queues.measurement.ledger import Shares, index_records
from queues.workers.lifeline import bind_to_runner
from queues.workers.reports import (
    CONSUMER,
    PRODUCER,
    BatchReport,
    Done,
    Histograms,
    Message,
    Ready,
    Reconnected,
    WorkerFailed,
    from_wire,
    to_wire,
)
from queues.workload.events import EVENT_SIZE, EVENT_STRUCT, MAGIC, decode_bodies, encode_events, split_messages
from queues.workload.schedule import Schedule
from queues.workload.spec import WorkloadSpec

HIST_FLUSH_S = 0.2
RECEIVE_TIMEOUT_S = 0.05
REPORT_MAX_DELAY_S = 0.002
SEND_TICK_S = 0.0005
CATCH_UP_CALLS = 64  # full calls a producer behind its schedule encodes at once
#: A worker whose connection is lost opens a new one, waiting this long at first and twice as
#: long after each failed attempt, up to ``RECONNECT_MAX_PAUSE_S``; after ``RECONNECT_GIVE_UP_S``
#: without a connection it fails (and the run with it) with the last error.
RECONNECT_FIRST_PAUSE_S, RECONNECT_MAX_PAUSE_S, RECONNECT_GIVE_UP_S = 0.05, 2.0, 30.0


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
            # what ``Connection.send`` writes, without its ``ForkingPickler`` (2.3 us a report
            # against 0.3: it copies the reducer table at each call); ``recv`` reads either
            self.writer.send_bytes(pickle.dumps(to_wire(message), pickle.HIGHEST_PROTOCOL))
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
    #: Distributed runs (``queues.distributed.coordinator``): shared Array, by producer index, of what a
    #: consumer adds to an event's latency to correct the clock offset between its host and
    #: the producer's (ns), set before ``start``. ``None`` on one machine: nothing added.
    latency_shift_ns: Any = None

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
    """Entry point of a forked worker: bound to its runner's life (``queues.workers.lifeline``), then
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
        self.singles: dict[str, list[int]] = {name: [] for name in names}  # ``add_one``'s
        self.last_flush = time.monotonic()

    def add(self, name: str, values_us: np.ndarray) -> None:
        if len(values_us):
            self.parts[name].append(values_us)

    def add_one(self, name: str, value_us: int) -> None:
        """One latency (a task library's one-event message: no array per value)."""
        self.singles[name].append(value_us)

    def add_split(self, name: str, values_us: np.ndarray, measured: np.ndarray) -> None:
        """``values_us[measured]`` under ``name``, the rest under ``name + "_warmup"``."""
        if measured.all():
            self.add(name, values_us)
        else:
            self.add(name, values_us[measured])
            self.add(f"{name}_warmup", values_us[~measured])

    def due(self) -> bool:
        return (any(self.parts.values()) or any(self.singles.values())) and \
            time.monotonic() - self.last_flush >= HIST_FLUSH_S

    def flush(self) -> dict[str, bytes]:
        """Encoded histograms of everything added since the last flush, by name."""
        for name, values in self.singles.items():
            if values:
                self.parts[name].append(np.array(values, dtype=np.int64))
        self.singles = {name: [] for name in self.names}
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


class _Link:
    """A worker's producer or consumer (``client``), opened again when its connection is lost.

    A lost connection (``BackendUnavailable``: the server closed it, restarted, or the network
    dropped) costs the worker a reconnect with backoff, reported to the runner, not the run:
    what the server kept (un-acked messages return, committed rows stay) goes on flowing. Only
    a server still unreachable after ``RECONNECT_GIVE_UP_S`` fails the worker.
    """

    def __init__(self, role: str, index: int, ctx: WorkerContext, open_client: Callable[[], Any]) -> None:
        self.role, self.index, self.ctx, self.open_client = role, index, ctx, open_client
        self.client = open_client()

    def reopen(self, lost: BackendUnavailable, resent: int = 0) -> None:
        """Replace the lost client; raises the last ``BackendUnavailable`` when no new one could
        be opened in time, or at once when the run is stopping (nothing is waited for then)."""
        with contextlib.suppress(Exception):  # the old connection is gone: closing it may fail any way
            self.client.close()
        deadline, pause, error = time.monotonic() + RECONNECT_GIVE_UP_S, RECONNECT_FIRST_PAUSE_S, lost
        while True:
            if self.ctx.stop.is_set() or time.monotonic() > deadline:
                raise error
            time.sleep(pause)
            try:
                self.client = self.open_client()
                break
            except BackendUnavailable as exc:
                error, pause = exc, min(pause * 2, RECONNECT_MAX_PAUSE_S)
        detail = str(lost).splitlines()[0] if str(lost) else type(lost).__name__
        self.ctx.channel.send(Reconnected(self.role, self.index, time.time_ns(), detail, resent))

    def send_batch(self, messages: Sequence[bytes], events: int) -> None:
        """Send ``messages`` (``events`` events), again on a new connection if it was lost
        during the call: at least once, since part of it may have reached the queue."""
        while True:
            try:
                self.client.send_batch(messages)
                return
            except BackendUnavailable as exc:
                self.reopen(exc, resent=events)

    def close(self) -> None:
        with contextlib.suppress(BackendUnavailable):  # lost at the very end: nothing left to say on it
            self.client.close()


def _produce(index: int, ctx: WorkerContext) -> None:
    link = _Link(PRODUCER, index, ctx, lambda: ctx.backend.for_worker().producer(ctx.queue))
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

    def __init__(self, index: int, ctx: WorkerContext, link: _Link) -> None:
        self.index, self.ctx, self.link = index, ctx, link
        self.base, self.count = ctx.spec.producer_shares()[index]
        self.chunk = ctx.spec.events_per_message * ctx.spec.batch
        self.window = ctx.window_ns()
        self.hists = _HistBuffer("send_delay", "send_delay_warmup", "publish")
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


def _consume(index: int, ctx: WorkerContext) -> None:
    spec, channel = ctx.spec, ctx.channel
    shares = Shares.of(spec)
    link = _Link(CONSUMER, index, ctx, lambda: ctx.backend.for_worker().consumer(ctx.queue))
    channel.send(Ready(CONSUMER, index, os.getpid()))
    ctx.start.wait()
    window = ctx.window_ns()
    shift = None if ctx.latency_shift_ns is None else np.array(ctx.latency_shift_ns[:], dtype=np.int64)
    hists = _HistBuffer("e2e", "e2e_warmup", "from_send", "e2e_negative")
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


def count_bodies(
    bodies: Any, shares: Shares, hists: _HistBuffer, window: tuple[int, int], steady: bool,
    shift: np.ndarray | None = None,
) -> tuple[list[int], np.ndarray, int, int, int, int]:
    """What a consumer reports of ``bodies`` received now: the poison messages' indices, the
    events' flat indices, their raw sum, the corrupt records, the receipt time and the events of
    the measured window; their latencies go into ``hists``."""
    received_ns = time.time_ns()
    records, poison = decode_bodies(bodies)
    flat, raw_sum, corrupt = index_records(records, shares)
    _record_latency(hists, received_ns, records, window[0], steady, shift)
    intended = records["intended_ns"]
    window_events = int(np.count_nonzero((intended >= window[0]) & (intended < window[1])))
    return poison, flat, raw_sum, corrupt, received_ns, window_events


def count_one(
    body: bytes, shares: Shares, hists: _HistBuffer, window: tuple[int, int], steady: bool,
    shift: np.ndarray | None = None,
) -> tuple[bytes, int, int, int, int, int]:
    """What ``count_bodies([body])`` reports, as a ``BatchReport``'s fields (flat indices as
    bytes, raw sum, corrupt, poison, receipt time, window events), without numpy for a message
    of one well-formed event: a task library hands over one message per task, and numpy's
    per-call cost on arrays of one was most of a task's counting (measured here: 46 us a task in
    the worker's loop, against a few here). Anything else (several events, poison, a corrupt
    record) is counted by ``count_bodies``."""
    if len(body) == EVENT_SIZE:
        magic, producer, seq, value, intended, sent = EVENT_STRUCT.unpack_from(body)
        if magic == MAGIC and producer < len(shares.base) and seq < shares.count[producer]:
            flat = int(shares.base[producer]) + seq
            if value == flat + 1:  # the checks of ledger.index_records, for one record
                received_ns = time.time_ns()
                correction = 0 if shift is None else int(shift[producer])
                e2e = (received_ns - intended + correction) // 1000  # as _record_latency
                measured = intended >= window[0]
                if shift is not None and e2e < 0:
                    hists.add_one("e2e_negative", -e2e)
                hists.add_one("e2e" if measured else "e2e_warmup", e2e)
                if not steady:
                    hists.add_one("from_send", e2e)
                elif measured:
                    hists.add_one("from_send", (received_ns - sent + correction) // 1000)
                return FLAT_INDEX.pack(flat), value, 0, 0, received_ns, int(window[0] <= intended < window[1])
    poison, flat_indices, raw_sum, corrupt, received_ns, window_events = count_bodies(
        [body], shares, hists, window, steady, shift
    )
    return flat_indices.tobytes(), raw_sum, corrupt, len(poison), received_ns, window_events


#: One flat ledger index as ``BatchReport.flat_indices`` carries it (``uint32``, native order).
FLAT_INDEX = struct.Struct("=I")


class _PendingReport:
    """Received batches not yet reported and acked.

    Each report goes to the runner *before* its batches are acked (at-least-once accounting).
    Small batches (a steady flow) are gathered for up to ``REPORT_MAX_DELAY_S`` or one full
    call's worth of events, so that the runner handles a few hundred reports a second instead of
    one per message; a full batch (a burst) is reported at once.
    """

    def __init__(self, index: int, channel: ReportChannel, link: _Link, *, flush_events: int) -> None:
        self.index, self.channel, self.link = index, channel, link
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

    def flush(self, hists: dict[str, bytes] | None, *, settle_them: bool = True) -> None:
        """Report what is pending, then ack it (``settle_them``). Emptied before the acks, so
        an ack that fails on a lost connection never gets the same batches reported twice."""
        batches = self.batches
        if batches:
            flat = self.flats[0] if len(self.flats) == 1 else np.concatenate(self.flats)
            self.channel.send(
                BatchReport(
                    self.index, flat.tobytes(), self.raw_sum, self.corrupt, self.poison, self.received_ns, hists,
                    self.window_events,
                )
            )
        elif hists:
            self.channel.send(Histograms(CONSUMER, self.index, hists))
        self._reset()
        if settle_them:
            for batch, poison in batches:
                settle(self.link.client, batch, poison)


def _record_latency(
    hists: _HistBuffer, received_ns: int, records: np.ndarray, window_start: int, steady: bool,
    shift: np.ndarray | None = None,
) -> None:
    """``shift``: see ``WorkerContext.latency_shift_ns``. A latency that comes out negative
    after it (the clocks' offsets were off by more than the latency) is recorded as 1 us in
    ``e2e`` and, by its size, in ``e2e_negative``: counted and reported, never dropped."""
    intended = records["intended_ns"]
    correction: Any = 0
    if shift is not None:  # a corrupt record's producer may be none of the run's: no correction
        producer = records["producer"]
        known = producer < len(shift)
        correction = np.where(known, shift[np.where(known, producer, 0)], 0)
    e2e = (received_ns - intended + correction) // 1000
    measured = intended >= window_start
    hists.add_split("e2e", e2e, measured)
    if shift is not None and (negative := e2e < 0).any():
        hists.add("e2e_negative", -e2e[negative])
    if steady:
        hists.add("from_send", ((received_ns - records["sent_ns"] + correction) // 1000)[measured])
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
