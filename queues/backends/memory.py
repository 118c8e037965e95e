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
import os
import pickle
import queue as std_queue
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from queues.backends.base import Backend, Batch, Capabilities, Consumer, Producer, log_nacked
from queues.backends.options import Option
from queues.errors import QueueError, QueueNotFound
from queues.workload.events import PackedMessages

log = logging.getLogger(__name__)
#: How long ``dead_letters`` waits for letters counted but still in a feeder thread's buffer.
DEAD_LETTER_WAIT_S = 5.0
#: ``memory-mp``'s default bound on what its queue holds, in MB of message bodies: a backlog
#: that a 2-core machine's memory takes in its stride, and far above what a consumer that
#: keeps up ever lets wait (a 1e6-event burst is 32 MB in all).
DEFAULT_MAX_BACKLOG_MB = 256.0


class _ThreadQueue:
    """Ready messages, the ones handed out and not yet acked, and the dead letters; the memory
    the ready ones take (``ready_bytes``), for the bound."""

    def __init__(self) -> None:
        self.ready: deque[bytes] = deque()
        self.ready_bytes = 0
        self.in_flight: dict[int, bytes] = {}
        self.dead: list[bytes] = []
        self.cond = threading.Condition()
        self.ids = itertools.count()


def _held_bytes(bodies: Sequence[bytes]) -> int:
    """What ``bodies`` take in a deque: a ``bytes`` object each, its header included."""
    return sum(map(len, bodies)) + len(bodies) * _MESSAGE_OVERHEAD_BYTES


_MESSAGE_OVERHEAD_BYTES = sys.getsizeof(b"") + 8  # the object's header and the deque's slot


class MemoryBackend(Backend):
    """Threads of one process around a deque. ``max_backlog_mb`` bounds the memory the ready
    messages take (producers wait), as ``memory-mp``'s does: a queue in the process's own
    memory must not grow with N."""

    name = "memory"
    capabilities = Capabilities(durable=False, native_batch=True, push=True, processes=False)
    options = (
        Option(
            "max_backlog_mb",
            float,
            DEFAULT_MAX_BACKLOG_MB,
            "producers wait while the queue holds this many MB of messages (0: unbounded)",
            minimum=0,
            maximum=1e6,
            unit="MB",
        ),
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_backlog_bytes = int(float(self.option_values["max_backlog_mb"]) * 1e6)
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
            q.ready_bytes = 0
            q.cond.notify_all()
        return removed

    def list_queues(self, namespace: str) -> list[str]:
        """Nothing: the queues live in the runner's memory and die with it."""
        return []

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
        return _ThreadProducer(self._get(queue), max_backlog_bytes=self.max_backlog_bytes)

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        return _ThreadConsumer(self, self._get(queue))


class _ThreadProducer(Producer):
    def __init__(self, q: _ThreadQueue, *, max_backlog_bytes: int = 0) -> None:
        self.q, self.max_backlog_bytes = q, max_backlog_bytes

    def send_batch(self, messages: Sequence[bytes]) -> None:
        q, size_bytes = self.q, _held_bytes(messages)
        with q.cond:
            # a batch larger than the bound still goes into an empty queue, or it never could
            while self.max_backlog_bytes and q.ready and q.ready_bytes + size_bytes > self.max_backlog_bytes:
                q.cond.wait()  # a consumer's take notifies
            q.ready.extend(messages)
            q.ready_bytes += size_bytes
            q.cond.notify_all()


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
            if n:
                q.ready_bytes -= _held_bytes(bodies)
                q.cond.notify_all()  # a producer may be waiting for room
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
                q.ready_bytes += _held_bytes(bodies)
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
    - ``max_backlog_mb``: producers wait while the queue holds that many MB of message bodies.
      On by default: what a ``multiprocessing`` queue holds waits in the producer's own memory
      (its feeder thread's buffer), so without a bound a burst of 1e8 events grew the producer
      by gigabytes; with it, memory is bounded by this capacity and the batch, whatever N.
    """

    name = "memory-mp"
    # a put returns before the feeder thread wrote it: a killed producer loses what it buffered
    capabilities = Capabilities(
        acks=False, redelivers_on_crash=False, durable=False, native_batch=True, push=True, confirmed_sends=False
    )
    options = (
        Option(
            "consume_cost_us",
            float,
            0.0,
            "simulated work per message in each consumer (0: none)",
            minimum=0,
            maximum=1e7,
            unit="us",
        ),
        Option(
            "stall_after",
            int,
            0,
            "each consumer pauses once after receiving this many messages (0: never)",
            minimum=0,
            unit="messages",
        ),
        Option("stall_s", float, 0.0, "how long that pause lasts", minimum=0, maximum=3600, unit="s"),
        Option(
            "max_depth",
            int,
            0,
            "producers wait while the queue holds this many messages (0: unbounded)",
            minimum=0,
            unit="messages",
        ),
        Option(
            "max_backlog_mb",
            float,
            DEFAULT_MAX_BACKLOG_MB,
            "producers wait while the queue holds this many MB of messages (0: unbounded)",
            minimum=0,
            maximum=1e6,
            unit="MB",
        ),
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # resolved here, in the runner's process: a bad value fails before anything is forked
        self.consume_cost_us = float(self.option_values["consume_cost_us"])
        self.stall_after = int(self.option_values["stall_after"])
        self.stall_s = float(self.option_values["stall_s"])
        self.max_depth = int(self.option_values["max_depth"])
        self.max_backlog_bytes = int(float(self.option_values["max_backlog_mb"]) * 1e6)
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
        removed = removed_bytes = 0
        while q.depth.value - removed > 0:  # the counter knows what is still in the feeder threads
            try:
                bodies = q.messages.get(timeout=0.5)
            except std_queue.Empty:
                break
            removed += len(bodies)
            removed_bytes += _size_bytes(bodies)
        q.taken(removed, removed_bytes)
        return removed

    def list_queues(self, namespace: str) -> list[str]:
        """Nothing: the queues live in the runner's memory and die with it."""
        return []

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
        return _PipeProducer(self._get(queue), max_depth=self.max_depth, max_backlog_bytes=self.max_backlog_bytes)

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        return _PipeConsumer(
            self._get(queue),
            cost_us=self.consume_cost_us,
            stall_after=self.stall_after,
            stall_s=self.stall_s,
        )


class _SlotCounter:
    """A counter shared by forked processes without a lock held while counting.

    Each process adds to a slot of its own (one writer a slot, so no lock), and the total is
    the sum of the slots. A shared lock would be held, now and then, by a consumer at the moment
    it is SIGKILLed, and every process counting after that (the runner reading the depth among
    them) would wait for it forever. A slot is taken once per process, under a lock with a
    timeout, when the process first counts (workers do it before the run starts).
    """

    SLOTS = 4096
    CLAIM_TIMEOUT_S = 5.0

    def __init__(self, ctx: Any) -> None:
        self._slots = ctx.Array("q", self.SLOTS, lock=False)
        self._view = np.frombuffer(self._slots, dtype=np.int64)
        self._taken = ctx.Value("i", 0, lock=False)
        self._claim = ctx.Lock()
        self._mine: tuple[int, int] | None = None  # (pid, slot) of this process

    def add(self, n: int) -> None:
        slot = self.claim()
        self._slots[slot] += n

    @property
    def value(self) -> int:
        return int(self._view[: self._taken.value].sum())

    def claim(self) -> int:
        """This process's slot (taken on the first call)."""
        pid = os.getpid()
        if self._mine is not None and self._mine[0] == pid:
            return self._mine[1]
        if not self._claim.acquire(timeout=self.CLAIM_TIMEOUT_S):
            raise QueueError("memory-mp: a counter slot could not be claimed (a process died holding the claim)")
        try:
            slot = self._taken.value
            if slot >= self.SLOTS:
                raise QueueError(f"memory-mp: more than {self.SLOTS} processes counted on one queue")
            self._taken.value = slot + 1
        finally:
            self._claim.release()
        self._mine = (pid, slot)
        return slot


class _PipeQueue:
    """One ``memory-mp`` queue: a ``multiprocessing`` queue of message lists, its exact depth
    (messages put and not yet taken) and the bytes of their bodies, both on lock-free
    ``_SlotCounter``s, and its dead letters.

    Dead letters go through a second ``multiprocessing`` queue: consumers that nack run in
    forked processes, and only the declaring process's backend reads them. Each is counted
    before it is put, so ``dead_letters`` knows how many are still in a feeder thread's buffer.
    """

    def __init__(self, ctx: Any) -> None:
        self.messages = ctx.Queue()
        self.depth = _SlotCounter(ctx)
        self.backlog_bytes = _SlotCounter(ctx)
        self.dead = ctx.Queue()
        self.dead_count = _SlotCounter(ctx)
        self.dead_read: list[bytes] = []  # taken off ``dead`` by this process
        self.broken = ctx.Value("b", 0, lock=False)  # a killed consumer tore a message: unreadable

    def taken(self, messages: int, size_bytes: int) -> None:
        self.depth.add(-messages)
        self.backlog_bytes.add(-size_bytes)

    def set_aside(self, bodies: Sequence[bytes]) -> None:
        self.dead_count.add(len(bodies))
        self.dead.put([bytes(body) for body in bodies])

    def dead_letters(self) -> list[bytes]:
        deadline = time.monotonic() + DEAD_LETTER_WAIT_S
        while len(self.dead_read) < self.dead_count.value:
            try:
                self.dead_read.extend(self.dead.get(timeout=max(0.0, deadline - time.monotonic())))
            except std_queue.Empty:
                # counted by a consumer killed before its feeder thread wrote them: lost with it
                log.warning(
                    "memory-mp: %d dead letter(s) counted but never received",
                    self.dead_count.value - len(self.dead_read),
                )
                break
        return list(self.dead_read)

    def close(self) -> None:
        for mpq in (self.messages, self.dead):
            mpq.close()
            mpq.cancel_join_thread()


def _size_bytes(bodies: Sequence[bytes]) -> int:
    return len(bodies.buffer) if isinstance(bodies, PackedMessages) else sum(map(len, bodies))


class _PipeProducer(Producer):
    def __init__(self, q: _PipeQueue, *, max_depth: int = 0, max_backlog_bytes: int = 0) -> None:
        self.q, self.mpq, self.depth, self.backlog_bytes = q, q.messages, q.depth, q.backlog_bytes
        self.max_depth, self.max_backlog_bytes = max_depth, max_backlog_bytes
        self.check_every_bytes, self.unchecked_bytes = max_backlog_bytes // 64, 0
        self.depth.claim()  # now, before the run starts, not at the first send
        self.backlog_bytes.claim()

    def send_batch(self, messages: Sequence[bytes]) -> None:
        size_bytes = _size_bytes(messages)
        # a bounded queue holds the producer back (closed loop); a batch larger than the bound
        # still goes into an empty queue, or it could never be sent
        while not self._reserve(len(messages), size_bytes):
            time.sleep(0.0002)
        # a PackedMessages batch crosses the pipe as one buffer, not one object per message
        self.mpq.put(messages if isinstance(messages, PackedMessages) else list(messages))

    def _reserve(self, messages: int, size_bytes: int) -> bool:
        """Count the batch in if the queue has room for it. Without a lock (see
        ``_SlotCounter``), producers checking at the same moment may each add one batch over the
        bound: the bound holds within a batch a producer.

        ``max_depth`` (a simulation knob) is checked on every call. The byte bound only guards
        memory, so it is checked once a producer has sent 1/64 of it since its last check: reading
        the shared counters on every one-message send cost a fifth of ``--batch 1``'s rate."""
        self.unchecked_bytes += size_bytes
        if self.max_depth or (self.max_backlog_bytes and self.unchecked_bytes >= self.check_every_bytes):
            depth = self.depth.value
            over = bool(self.max_depth) and depth + messages > self.max_depth
            over |= bool(self.max_backlog_bytes) and self.backlog_bytes.value + size_bytes > self.max_backlog_bytes
            if over and depth:
                self.unchecked_bytes -= size_bytes
                return False
            self.unchecked_bytes = 0
        self.depth.add(messages)
        self.backlog_bytes.add(size_bytes)
        return True

    def close(self) -> None:
        """Nothing to release: the queue belongs to the backend, and a worker process flushes
        its queue's feeder thread when it exits."""


#: What unpickling the rest of a message a killed consumer had half read raises.
_TORN = (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError)


class _PipeConsumer(Consumer):
    def __init__(self, q: _PipeQueue, *, cost_us: float = 0.0, stall_after: int = 0, stall_s: float = 0.0) -> None:
        self.q, self.mpq, self.depth = q, q.messages, q.depth
        self.depth.claim()  # now, before the run starts, not at the first receive
        self.leftover: list[bytes] = []
        self.cost_s, self.stall_after, self.stall_s = cost_us / 1e6, stall_after, stall_s
        self.received = 0
        self.busy_until = 0.0

    def _torn(self, exc: BaseException) -> Batch:
        """A consumer SIGKILLed inside a read took part of a message off the pipe: the bytes left
        can no longer be framed, so nobody reads the queue again (at-most-once: what it held is
        lost, and the ledger says so)."""
        if not self.q.broken.value:
            self.q.broken.value = 1
            log.warning(
                "memory-mp: the queue's pipe was torn by a consumer killed while reading it (%s: %s); "
                "what it still holds is lost",
                type(exc).__name__,
                exc,
            )
        return Batch()

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
            if was_idle or not self.busy_until:
                # the clock starts at the first batch too: a consumer that found a backlog on
                # its first receive (never idle) otherwise ran at full speed until the queue
                # was first empty, far above its declared capacity
                self.busy_until = max(self.busy_until, now)
            self.busy_until += messages * self.cost_s
            if self.busy_until > now:
                time.sleep(self.busy_until - now)

    def receive_batch(self, max_messages: int, timeout_s: float) -> Batch:
        bodies, was_idle = self.leftover, False
        if not bodies:
            if self.q.broken.value:
                time.sleep(timeout_s)  # what is left in the pipe cannot be read: lost, and so reported
                return Batch()
            try:
                bodies = self.mpq.get_nowait()
            except std_queue.Empty:
                was_idle = True
                try:
                    bodies = self.mpq.get(timeout=timeout_s)
                except std_queue.Empty:
                    return Batch()
                except _TORN as exc:
                    return self._torn(exc)
            except _TORN as exc:
                return self._torn(exc)
        if len(bodies) > max_messages:
            bodies, self.leftover = bodies[:max_messages], bodies[max_messages:]
        else:
            self.leftover = []
        if not isinstance(bodies, (list, PackedMessages)):
            bodies = list(bodies)
        self.q.taken(len(bodies), _size_bytes(bodies))
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
