"""Producer and consumer workers: what runs in each forked process (or thread).

Workers talk to the runner over one ``ReportChannel``. A consumer reports each batch it
received (the events' flat indices and raw sum) *before* it acks it, so that the runner's
ledger survives the consumer being killed; latency is recorded in the consumer's own
HdrHistograms and shipped encoded every ``HIST_FLUSH_S``.
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
from queues.metrics import encode, new_histogram, record_many
from queues.workload import WorkloadSpec

HIST_FLUSH_S = 0.2
RECEIVE_TIMEOUT_S = 0.05
SENT_REPORT_S = 0.1


class ReportChannel:
    """Many writers, one reader: a one-way pipe with a writer lock.

    ``send`` writes synchronously (no feeder thread as in ``multiprocessing.Queue``), so a
    report is in the kernel's pipe before the consumer acks: a SIGKILL right after cannot lose it.
    """

    def __init__(self, ctx: Any) -> None:
        self.reader, self.writer = ctx.Pipe(duplex=False)
        self.lock = ctx.Lock()

    def send(self, message: tuple) -> None:
        with self.lock:
            self.writer.send(message)

    def poll(self, timeout_s: float) -> bool:
        return self.reader.poll(timeout_s)

    def recv(self) -> tuple:
        return self.reader.recv()


@dataclass
class WorkerContext:
    """Everything a worker needs, inherited through fork (never pickled)."""

    spec: WorkloadSpec
    backend: Backend
    queue: str
    channel: ReportChannel
    start: Any  # Event: producers begin
    stop: Any  # Event: consumers finish, producers abandon what is left
    profile_dir: str | None = None  # write a cProfile of each worker there (bench/)


def run_worker(role: str, index: int, ctx: WorkerContext) -> None:
    """Entry point of a worker process or thread; reports an error instead of raising."""
    work = _produce if role == "producer" else _consume
    try:
        if ctx.profile_dir:
            _profiled(work, index, ctx, f"{ctx.profile_dir}/{role}-{index}.prof")
        else:
            work(index, ctx)
    except BaseException as exc:  # noqa: BLE001 - reported to the runner, which fails the run
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        ctx.channel.send(("error", role, index, detail))


def _profiled(work: Any, index: int, ctx: WorkerContext, path: str) -> None:
    import cProfile

    profile = cProfile.Profile()
    try:
        profile.runcall(work, index, ctx)
    finally:
        profile.dump_stats(path)


def _produce(index: int, ctx: WorkerContext) -> None:
    spec = ctx.spec
    producer = ctx.backend.for_worker().producer(ctx.queue)
    ctx.channel.send(("ready", "producer", index, os.getpid()))
    ctx.start.wait()
    base, count = spec.producer_shares()[index]
    chunk = spec.events_per_message * spec.batch
    publish = new_histogram()
    sent, last_report = 0, time.monotonic()
    for start in range(0, count, chunk):
        if ctx.stop.is_set():
            break
        seq = np.arange(start, min(start + chunk, count), dtype=np.int64)
        now_ns = time.time_ns()
        messages = split_messages(encode_events(index, seq, seq + (base + 1), now_ns, now_ns), spec.events_per_message)
        began = time.perf_counter_ns()
        producer.send_batch(messages)
        publish.record_value(max(1, (time.perf_counter_ns() - began) // 1000))
        sent += len(seq)
        if time.monotonic() - last_report >= SENT_REPORT_S:
            ctx.channel.send(("sent", index, sent))
            last_report = time.monotonic()
    producer.close()
    ctx.channel.send(("sent", index, sent))
    ctx.channel.send(("done", "producer", index, {"publish_hist": encode(publish)}))


def _consume(index: int, ctx: WorkerContext) -> None:
    spec, channel = ctx.spec, ctx.channel
    shares = Shares.of(spec)
    consumer = ctx.backend.for_worker().consumer(ctx.queue)
    channel.send(("ready", "consumer", index, os.getpid()))
    ctx.start.wait()
    latency = _LatencyBuffer()
    while not ctx.stop.is_set():
        batch = consumer.receive_batch(spec.batch, RECEIVE_TIMEOUT_S)
        if not batch:
            if latency.due():
                channel.send(("hist", index, *latency.flush()))
            continue
        received_ns = time.time_ns()
        records, poison = decode_bodies(batch.bodies)
        flat, raw_sum, corrupt = index_records(records, shares)
        latency.add(received_ns, records)
        hists = latency.flush() if latency.due() else None
        channel.send(("batch", index, flat.tobytes(), raw_sum, corrupt, len(poison), received_ns, hists))
        _settle(consumer, batch, poison)
    consumer.close()
    channel.send(("hist", index, *latency.flush()))
    channel.send(("done", "consumer", index, {}))


class _LatencyBuffer:
    """Latencies of the batches since the last flush, recorded into HdrHistograms at flush time:
    one vectorised ``record_many`` per flush rather than per batch."""

    def __init__(self) -> None:
        self.e2e: list[np.ndarray] = []
        self.from_send: list[np.ndarray] = []
        self.last_flush = time.monotonic()

    def add(self, received_ns: int, records: np.ndarray) -> None:
        e2e = (received_ns - records["intended_ns"]) // 1000
        self.e2e.append(e2e)
        # in a burst the intended time is the send time: share the array, record it once
        same = (records["intended_ns"] == records["sent_ns"]).all()
        self.from_send.append(e2e if same else (received_ns - records["sent_ns"]) // 1000)

    def due(self) -> bool:
        return bool(self.e2e) and time.monotonic() - self.last_flush >= HIST_FLUSH_S

    def flush(self) -> tuple[bytes, bytes]:
        """The encoded histograms (end to end, from send) of everything added since last time."""
        e2e = self._encode(self.e2e)
        same = len(self.e2e) == len(self.from_send) and all(a is b for a, b in zip(self.e2e, self.from_send, strict=True))
        from_send = e2e if same else self._encode(self.from_send)
        self.e2e, self.from_send = [], []
        self.last_flush = time.monotonic()
        return e2e, from_send

    @staticmethod
    def _encode(parts: list[np.ndarray]) -> bytes:
        hist = new_histogram()
        if parts:
            record_many(hist, np.concatenate(parts))
        return encode(hist)


def _settle(consumer: Any, batch: Any, poison: list[int]) -> None:
    """Ack what was counted; set poison messages aside as dead letters (never requeue them:
    they would come back forever)."""
    if not poison:
        consumer.ack(batch)
        return
    bad = set(poison)
    consumer.nack(batch.subset(poison), requeue=False)
    consumer.ack(batch.subset([i for i in range(len(batch)) if i not in bad]))
