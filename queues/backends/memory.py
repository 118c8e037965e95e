"""In-memory backends: no server, for the embedded default and as the engine's own baseline.

``memory``: a deque shared by threads of one process, with real acks (un-acked messages return
on ``nack`` or ``close``). ``memory-mp``: a ``multiprocessing`` queue between forked processes;
like a plain pipe it has no acknowledgements, so it declares at-most-once.

Both keep what ``nack(requeue=False)`` sets aside, for ``dead_letters``: ``memory`` in a list
beside the queue, ``memory-mp`` through a second ``multiprocessing`` queue, because the consumer
that nacks runs in a forked process and the runner's backend object reads them.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import queue as std_queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from queues.backends.base import Backend, Batch, Capabilities, Consumer, Producer, log_nacked
from queues.errors import QueueNotFound
from queues.events import PackedMessages
from queues.options import Option

log = logging.getLogger(__name__)
#: How long ``dead_letters`` waits for letters counted but still in a feeder thread's buffer.
DEAD_LETTER_WAIT_S = 5.0


class _ThreadQueue:
    """Ready messages, the ones handed out and not yet acked, and the dead letters."""

    def __init__(self) -> None:
        self.ready: deque[bytes] = deque()
        self.in_flight: dict[int, bytes] = {}
        self.dead: list[bytes] = []
        self.cond = threading.Condition()
        self.ids = itertools.count()


class MemoryBackend(Backend):
    name = "memory"
    capabilities = Capabilities(durable=False, native_batch=True, push=True, processes=False)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._queues: dict[str, _ThreadQueue] = {}

    def for_worker(self) -> MemoryBackend:
        return self  # threads share the queues

    def declare(self, queue: str) -> None:
        self._queues.setdefault(queue, _ThreadQueue())

    def _get(self, queue: str) -> _ThreadQueue:
        try:
            return self._queues[queue]
        except KeyError:
            raise QueueNotFound(f"{self.name}: queue {queue!r} was not declared") from None

    def purge(self, queue: str) -> int:
        q = self._get(queue)
        with q.cond:
            removed = len(q.ready)
            q.ready.clear()
        return removed

    def delete(self, queue: str) -> None:
        self._queues.pop(queue, None)

    def depth(self, queue: str) -> int:
        q = self._get(queue)
        with q.cond:
            return len(q.ready) + len(q.in_flight)

    def dead_letters(self, queue: str) -> list[bytes]:
        """What ``nack(requeue=False)`` set aside, oldest first (reading keeps them)."""
        q = self._get(queue)
        with q.cond:
            return list(q.dead)

    def producer(self, queue: str) -> Producer:
        return _ThreadProducer(self._get(queue))

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        return _ThreadConsumer(self, self._get(queue))


class _ThreadProducer(Producer):
    def __init__(self, q: _ThreadQueue) -> None:
        self.q = q

    def send_batch(self, messages: Sequence[bytes]) -> None:
        with self.q.cond:
            self.q.ready.extend(messages)
            self.q.cond.notify_all()


class _ThreadConsumer(Consumer):
    def __init__(self, backend: MemoryBackend, q: _ThreadQueue) -> None:
        self.backend, self.q = backend, q
        self.unacked: set[int] = set()

    def receive_batch(self, max_messages: int, timeout_s: float) -> Batch:
        q = self.q
        with q.cond:
            if not q.ready:
                q.cond.wait(timeout_s)
            n = min(max_messages, len(q.ready))
            bodies = [q.ready.popleft() for _ in range(n)]
            ids = list(itertools.islice(q.ids, n))
            q.in_flight.update(zip(ids, bodies, strict=True))
        self.unacked.update(ids)
        return Batch(bodies, ids)

    def ack(self, batch: Batch) -> None:
        with self.q.cond:
            for i in batch.receipts or ():
                self.q.in_flight.pop(i, None)
        self.unacked.difference_update(batch.receipts or ())

    def nack(self, batch: Batch, *, requeue: bool = True) -> None:
        q = self.q
        with q.cond:
            bodies = [q.in_flight.pop(i) for i in batch.receipts or () if i in q.in_flight]
            if requeue:
                q.ready.extendleft(reversed(bodies))
                q.cond.notify_all()
            else:
                q.dead.extend(bodies)
        self.unacked.difference_update(batch.receipts or ())
        log_nacked(log, self.backend.name, len(bodies), requeue=requeue)

    def close(self) -> None:
        if self.unacked:
            self.nack(Batch([b""] * len(self.unacked), sorted(self.unacked)))


class MultiprocessBackend(Backend):
    """A ``multiprocessing.Queue`` of message lists (one ``put`` per batch) between forked
    processes. ``depth`` is exact: a shared counter of messages put and not yet taken.

    Options that simulate a slower or faultier system, for experiments and tests:

    - ``consume_cost_us``: each consumer spends this long per message (a consumer whose
      capacity is known: 1e6 / cost messages/s);
    - ``stall_after`` and ``stall_s``: each consumer pauses once for ``stall_s`` seconds after
      it has received ``stall_after`` messages;
    - ``max_depth``: producers wait while the queue holds that many messages (backpressure, as
      from a bounded broker queue); 0 is unbounded.
    """

    name = "memory-mp"
    capabilities = Capabilities(acks=False, redelivers_on_crash=False, durable=False, native_batch=True, push=True)
    options = (
        Option("consume_cost_us", float, 0.0, "simulated work per message in each consumer (0: none)",
               minimum=0, maximum=1e7, unit="us"),
        Option("stall_after", int, 0, "each consumer pauses once after receiving this many messages (0: never)",
               minimum=0, unit="messages"),
        Option("stall_s", float, 0.0, "how long that pause lasts", minimum=0, maximum=3600, unit="s"),
        Option("max_depth", int, 0, "producers wait while the queue holds this many messages (0: unbounded)",
               minimum=0, unit="messages"),
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # resolved here, in the runner's process: a bad value fails before anything is forked
        self.consume_cost_us = float(self.option_values["consume_cost_us"])
        self.stall_after = int(self.option_values["stall_after"])
        self.stall_s = float(self.option_values["stall_s"])
        self.max_depth = int(self.option_values["max_depth"])
        self._ctx = multiprocessing.get_context("fork")
        self._queues: dict[str, _PipeQueue] = {}

    def for_worker(self) -> MultiprocessBackend:
        return self  # forked workers inherit the queues

    def declare(self, queue: str) -> None:
        if queue not in self._queues:
            self._queues[queue] = _PipeQueue(self._ctx)

    def _get(self, queue: str) -> _PipeQueue:
        try:
            return self._queues[queue]
        except KeyError:
            raise QueueNotFound(f"{self.name}: queue {queue!r} was not declared in this process") from None

    def purge(self, queue: str) -> int:
        q = self._get(queue)
        removed = 0
        while q.depth.value - removed > 0:  # the counter knows what is still in the feeder threads
            try:
                removed += len(q.messages.get(timeout=0.5))
            except std_queue.Empty:
                break
        with q.depth.get_lock():
            q.depth.value -= removed
        return removed

    def delete(self, queue: str) -> None:
        entry = self._queues.pop(queue, None)
        if entry is not None:
            entry.close()

    def depth(self, queue: str) -> int:
        return self._get(queue).depth.value

    def release_dead_consumers(self, queue: str) -> None:
        """A consumer waits for the pipe holding the queue's reader lock, so one killed (or
        SIGSTOPped, then killed) almost always dies holding it, and no one could read the queue
        again. Once every consumer is gone the runner's process is the only reader left: it
        takes a fresh lock of its own (``multiprocessing.Queue`` keeps it in ``_rlock``)."""
        self._get(queue).messages._rlock = self._ctx.Lock()

    def dead_letters(self, queue: str) -> list[bytes]:
        """What consumers (in any process) set aside with ``nack(requeue=False)``; reading
        keeps them. Valid in the process that declared the queue (the runner's)."""
        return self._get(queue).dead_letters()

    def producer(self, queue: str) -> Producer:
        return _PipeProducer(self._get(queue), max_depth=self.max_depth)

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        return _PipeConsumer(
            self._get(queue),
            cost_us=self.consume_cost_us, stall_after=self.stall_after, stall_s=self.stall_s,
        )


class _PipeQueue:
    """One ``memory-mp`` queue: a ``multiprocessing`` queue of message lists, its exact depth
    (a shared counter of messages put and not yet taken), and its dead letters.

    Dead letters go through a second ``multiprocessing`` queue: consumers that nack run in
    forked processes, and only the declaring process's backend reads them. Each is counted
    before it is put, so ``dead_letters`` knows how many are still in a feeder thread's buffer.
    """

    def __init__(self, ctx: Any) -> None:
        self.messages = ctx.Queue()
        self.depth = ctx.Value("q", 0)
        self.dead = ctx.Queue()
        self.dead_count = ctx.Value("q", 0)
        self.dead_read: list[bytes] = []  # taken off ``dead`` by this process

    def set_aside(self, bodies: Sequence[bytes]) -> None:
        with self.dead_count.get_lock():
            self.dead_count.value += len(bodies)
        self.dead.put([bytes(body) for body in bodies])

    def dead_letters(self) -> list[bytes]:
        deadline = time.monotonic() + DEAD_LETTER_WAIT_S
        while len(self.dead_read) < self.dead_count.value:
            try:
                self.dead_read.extend(self.dead.get(timeout=max(0.0, deadline - time.monotonic())))
            except std_queue.Empty:
                # counted by a consumer killed before its feeder thread wrote them: lost with it
                log.warning("memory-mp: %d dead letter(s) counted but never received",
                            self.dead_count.value - len(self.dead_read))
                break
        return list(self.dead_read)

    def close(self) -> None:
        for mpq in (self.messages, self.dead):
            mpq.close()
            mpq.cancel_join_thread()


class _PipeProducer(Producer):
    def __init__(self, q: _PipeQueue, *, max_depth: int = 0) -> None:
        self.mpq, self.depth, self.max_depth = q.messages, q.depth, max_depth

    def send_batch(self, messages: Sequence[bytes]) -> None:
        # a bounded queue holds the producer back (closed loop); a batch larger than the bound
        # still goes into an empty queue, or it could never be sent
        while self.max_depth and self.depth.value and self.depth.value + len(messages) > self.max_depth:
            time.sleep(0.0002)
        with self.depth.get_lock():
            self.depth.value += len(messages)
        # a PackedMessages batch crosses the pipe as one buffer, not one object per message
        self.mpq.put(messages if isinstance(messages, PackedMessages) else list(messages))

    def close(self) -> None:
        """Nothing to release: the queue belongs to the backend, and a worker process flushes
        its queue's feeder thread when it exits."""


class _PipeConsumer(Consumer):
    def __init__(self, q: _PipeQueue, *, cost_us: float = 0.0, stall_after: int = 0, stall_s: float = 0.0) -> None:
        self.q, self.mpq, self.depth = q, q.messages, q.depth
        self.leftover: list[bytes] = []
        self.cost_s, self.stall_after, self.stall_s = cost_us / 1e6, stall_after, stall_s
        self.received = 0
        self.busy_until = 0.0

    def _simulate_work(self, messages: int, was_idle: bool) -> None:
        """Sleep as a consumer doing ``cost_s`` of work per message would be busy.

        The work is kept on a clock that restarts only when the consumer found the queue empty:
        sleep overshoot and the harness's own per-batch time are absorbed, so a busy consumer
        takes exactly 1 / cost_s messages a second.
        """
        before, self.received = self.received, self.received + messages
        if self.stall_after and before < self.stall_after <= self.received:
            time.sleep(self.stall_s)
        if self.cost_s:
            now = time.monotonic()
            if was_idle:
                self.busy_until = max(self.busy_until, now)
            self.busy_until += messages * self.cost_s
            if self.busy_until > now:
                time.sleep(self.busy_until - now)

    def receive_batch(self, max_messages: int, timeout_s: float) -> Batch:
        bodies, was_idle = self.leftover, False
        if not bodies:
            try:
                bodies = self.mpq.get_nowait()
            except std_queue.Empty:
                was_idle = True
                try:
                    bodies = self.mpq.get(timeout=timeout_s)
                except std_queue.Empty:
                    return Batch()
        if len(bodies) > max_messages:
            bodies, self.leftover = bodies[:max_messages], bodies[max_messages:]
        else:
            self.leftover = []
        if not isinstance(bodies, (list, PackedMessages)):
            bodies = list(bodies)
        with self.depth.get_lock():
            self.depth.value -= len(bodies)
        if self.cost_s or self.stall_after:
            self._simulate_work(len(bodies), was_idle)
        return Batch(bodies)

    def ack(self, batch: Batch) -> None:
        """Nothing to do: a pipe has no acknowledgements."""

    def nack(self, batch: Batch, *, requeue: bool = True) -> None:
        """Without acks, a nack sends the messages again (``requeue=True``) or sets them aside
        for the declaring process's ``dead_letters``."""
        if not batch.bodies:
            return
        if requeue:
            _PipeProducer(self.q).send_batch(batch.bodies)
        else:
            self.q.set_aside(batch.bodies)
        log_nacked(log, MultiprocessBackend.name, len(batch.bodies), requeue=requeue)

    def close(self) -> None:
        if self.leftover:
            self.nack(Batch(self.leftover))
            self.leftover = []
