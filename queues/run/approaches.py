"""In-process approaches: the same workload handed off without a broker, in one process.

They answer "what does the hand-off mechanism itself cost in Python?" and give the floor
against which the queue backends are read. Each carries every event as a ``(value, sent_ns)``
pair, accounts it in the same ledger and records its latency in the same HdrHistogram as the
backends, and returns the same ``RunResult``.

- ``loop``: one thread, a plain ``for`` loop: no hand-off at all (the floor).
- ``asyncio``: producer and consumer coroutines on a bounded ``asyncio.Queue``, one event a
  ``put``/``get``.
- ``futures``: one ``concurrent.futures`` task per message on a pool of ``consumers`` threads,
  at most ``batch`` in flight (the analogue of a promise chain).
- ``reactive``: a ``reactivex`` pipeline (``from_iterable`` -> ``map`` -> ``buffer_with_count``)
  on one thread: the cost of the operators per event.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from queues.errors import InvalidSpec
from queues.measurement import environment
from queues.measurement.histograms import IntervalSample, bucket_counts, new_histogram, percentiles_ms, record_many
from queues.measurement.ledger import Ledger
from queues.measurement.summary import summarise
from queues.run.result import RunResult, RunStatus
from queues.workload.spec import WorkloadSpec

DESCRIPTIONS = {
    "loop": "a plain for-loop on one thread, no hand-off: the floor",
    "asyncio": "producer and consumer coroutines on an asyncio.Queue, one event a put/get",
    "futures": "one concurrent.futures task per message on a thread pool",
    "reactive": "a reactivex pipeline on one thread: operator cost per event",
}
SINGLE_THREADED = {"loop", "reactive"}


class _Accountant:
    """Collects consumed ``(value, sent_ns)`` pairs and accounts them in chunks (thread-safe)."""

    def __init__(
        self,
        spec: WorkloadSpec,
        on_progress: Callable[[int, int], None] | None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> None:
        self.spec, self.on_progress = spec, on_progress
        self.should_cancel = should_cancel or (lambda: False)
        #: Set once ``should_cancel`` said so: producers send nothing more, consumers finish
        #: what was handed to them, and the run ends cancelled with what was counted.
        self.stopped = False
        self.ledger = Ledger(spec)
        self.latency = new_histogram()
        self.lock = threading.Lock()
        self.last_ns = 0

    def account(self, values: list[int], sent_ns: list[int]) -> None:
        received_ns = time.time_ns()
        flat = np.asarray(values, dtype=np.int64) - 1
        with self.lock:
            self.ledger.add_indices(flat.astype(np.uint32), int(flat.sum()) + len(values))
            record_many(self.latency, (received_ns - np.asarray(sent_ns, dtype=np.int64)) // 1000)
            self.last_ns = received_ns
        if self.on_progress:
            self.on_progress(self.ledger.unique, self.spec.events)
        if not self.stopped and self.should_cancel():
            self.stopped = True


def _loop(spec: WorkloadSpec, acc: _Accountant) -> None:
    total = 0
    values: list[int] = []
    stamps: list[int] = []
    for value in range(1, spec.events + 1):
        total += value
        values.append(value)
        stamps.append(time.time_ns())
        if len(values) == spec.batch:
            acc.account(values, stamps)
            values, stamps = [], []
            if acc.stopped:
                return
    if values:
        acc.account(values, stamps)


def _asyncio(spec: WorkloadSpec, acc: _Accountant) -> None:
    async def produce(queue: asyncio.Queue, base: int, count: int) -> None:
        for value in range(base + 1, base + count + 1):
            if value % spec.batch == 0 and acc.stopped:
                return
            await queue.put((value, time.time_ns()))

    async def consume(queue: asyncio.Queue) -> None:
        values: list[int] = []
        stamps: list[int] = []
        while True:
            item = await queue.get()
            if item is None:
                break
            values.append(item[0])
            stamps.append(item[1])
            if len(values) == spec.batch:
                acc.account(values, stamps)
                values, stamps = [], []
        if values:
            acc.account(values, stamps)

    async def main() -> None:
        queue: asyncio.Queue = asyncio.Queue(maxsize=spec.batch)
        consumers = [asyncio.create_task(consume(queue)) for _ in range(spec.consumers)]
        await asyncio.gather(*(produce(queue, b, c) for b, c in spec.producer_shares()))
        for _ in consumers:
            await queue.put(None)
        await asyncio.gather(*consumers)

    asyncio.run(main())


def _futures(spec: WorkloadSpec, acc: _Accountant) -> None:
    def handle(values: list[int], sent_ns: int) -> None:
        acc.account(values, [sent_ns] * len(values))

    in_flight: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=spec.consumers) as pool:
        for base, count in spec.producer_shares():
            for lo in range(base + 1, base + count + 1, spec.events_per_message):
                if acc.stopped:
                    break
                values = list(range(lo, min(lo + spec.events_per_message, base + count + 1)))
                in_flight.append(pool.submit(handle, values, time.time_ns()))
                if len(in_flight) >= spec.batch:
                    in_flight.popleft().result()
        for future in in_flight:
            future.result()


def _reactive(spec: WorkloadSpec, acc: _Accountant) -> None:
    # the reactive approach only: reactivex costs its import to every other run otherwise
    import reactivex as rx
    from reactivex import operators as ops

    errors: list[BaseException] = []
    values = itertools.takewhile(lambda _: not acc.stopped, range(1, spec.events + 1))
    rx.from_iterable(values).pipe(
        ops.map(lambda value: (value, time.time_ns())),
        ops.buffer_with_count(spec.batch),
    ).subscribe(
        on_next=lambda chunk: acc.account([v for v, _ in chunk], [t for _, t in chunk]),
        on_error=errors.append,
    )
    if errors:
        raise errors[0]


APPROACHES: dict[str, Callable[[WorkloadSpec, _Accountant], None]] = {
    "loop": _loop,
    "asyncio": _asyncio,
    "futures": _futures,
    "reactive": _reactive,
}


def validate(spec: WorkloadSpec) -> None:
    """Raises ``InvalidSpec`` for what an approach cannot do, rather than ignoring it."""
    if spec.steady:
        raise InvalidSpec(
            f"the {spec.backend} approach runs bursts only: a steady rate (--rate) needs a queue backend",
            field="rate_eps",
        )
    if spec.backend in SINGLE_THREADED and (spec.producers, spec.consumers) != (1, 1):
        raise InvalidSpec(
            f"the {spec.backend} approach runs on one thread: use producers=1 and consumers=1",
            field="producers" if spec.producers != 1 else "consumers",
        )


def run_approach(
    spec: WorkloadSpec,
    *,
    run_id: str,
    on_sample: Callable[[IntervalSample], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> RunResult:
    """Run ``spec`` with the approach named by ``spec.backend``; returns its ``RunResult``
    (cancelled, with what was counted, once ``should_cancel`` returns true)."""
    validate(spec)
    acc = _Accountant(spec, on_progress, should_cancel)
    began_ns, began = time.time_ns(), time.monotonic()
    APPROACHES[spec.backend](spec, acc)
    elapsed = time.monotonic() - began
    ledger = acc.ledger.result()
    sample = IntervalSample(
        t_s=round(elapsed, 3),
        produced=spec.events,
        consumed=ledger.received,
        unique=ledger.unique,
        produce_eps=round(spec.events / elapsed, 1),
        consume_eps=round(ledger.received / elapsed, 1),
        depth=None,
        backlog=0,
        latency_ms=percentiles_ms(acc.latency),
    )
    sample.latency_buckets, sample.latency_sum_us = bucket_counts(acc.latency)
    if on_sample:
        on_sample(sample)
    drain_s = (acc.last_ns - began_ns) / 1e9
    status, error = (RunStatus.CANCELLED, "cancelled by the user") if acc.stopped else (RunStatus.SUCCEEDED, None)
    summary = summarise(
        run_id=run_id,
        spec=spec,
        status=status,
        error=error,
        ledger=ledger,
        drain_s=drain_s,
        latency=acc.latency,
        latency_from_send=acc.latency,
        publish=None,
        poison=0,
    )
    env = environment.collect({"approach": DESCRIPTIONS[spec.backend]})
    return RunResult(run_id, spec, status, error, summary, [sample], env, ledger)
