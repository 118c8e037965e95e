"""What every task-library backend shares: the library's worker runs inside the imqueue consumer.

A task library owns its consumer loop: its worker fetches a task and calls the task's function.
``LibraryConsumer`` starts the library's own worker (through its worker API: Celery's
``WorkController``, RQ's ``SimpleWorker``, Dramatiq's ``Worker``, huey's consumer ``Worker``,
procrastinate's ``run_worker``, django-q2's pipeline) on a thread of the consumer's process; the
library's task function calls ``deliver`` with its message. Two ways on from there:

- In a run's consumer (``queues.workers.consumer.consume`` calls ``consume_until``), the message is
  counted on the library's thread (``TaskCounter``: ``queues.workers.counting.count_bodies``, the
  counting of every raw consumer) and its ``BatchReport`` sent before the task returns, so the
  library acks it as it acks any task, after the runner has it (the libraries that ack early
  ack before the task runs: ``Capabilities`` say which). A SIGKILL of the consumer process
  kills the library's worker with it, in the middle of a task.
- Everywhere else the ``Consumer`` interface is used (the final drain, the contract tests), the
  task hands its message over to ``receive_batch`` and waits until it is acked or nacked.

A library worker runs one task at a time and waits for it, so a consumer holds at most one
un-acked message: declared as ``Capabilities.holds_many=False``. A task that imqueue gives back
(``nack(requeue=True)``, or a consumer closed while it held it) is enqueued again through the
library; a dead letter (``nack(requeue=False)``) fails the task without a retry, where the
library keeps failed tasks readable, and is dropped where it keeps none.
"""

from __future__ import annotations

import base64
import contextvars
import logging
import queue as queue_module
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from queues.backends.base import CONNECT_TIMEOUT, Backend, Batch, Capabilities, Consumer, Producer, first_line
from queues.backends.options import Option
from queues.errors import BackendUnavailable, NotSupported, QueueError
from queues.workers.channel import RunnerGone
from queues.workers.counting import count_one
from queues.workers.reports import BatchReport

log = logging.getLogger(__name__)

ACK, REQUEUE, DEAD = "ack", "requeue", "dead"
#: Longest ``close`` waits for the library's worker to stop (a worker in a blocking fetch
#: returns when that fetch times out); past it the thread is left to die with the process.
STOP_JOIN_S = 3.0
#: How often a run's consumer looks at its stop flag while the library's worker counts.
CALLBACK_POLL_S = 0.02
#: How often a waiting task looks whether its consumer is closing.
SETTLE_POLL_S = 0.1
#: Longest a consumer waits for its library's worker to start before it reports that it did not.
START_TIMEOUT_S = 30.0

#: The consumer whose library worker runs in this context: set on the worker's thread, copied
#: by the libraries that run a task on another thread with the context (asyncio's to_thread).
CURRENT: contextvars.ContextVar[LibraryConsumer] = contextvars.ContextVar("imq_library_consumer")

#: Every task-library backend: one task per message, a worker that hands over one at a time.
LIBRARY = Capabilities(durable=False, holds_many=False, push=True)

#: The option of the libraries with a batch API: enqueue a send call's messages with it (off by
#: default: one enqueue call per task, as users use them).
BATCH_API = Option("batch_api", bool, False, "enqueue a send call's tasks with the library's batch API")


def text_of(body: bytes) -> str:
    """A message body as the text a JSON serializer can carry (base64)."""
    return base64.b64encode(body).decode("ascii")


def bytes_of(text: str) -> bytes:
    return base64.b64decode(text)


def missing_library(backend: str, exc: ImportError) -> BackendUnavailable:
    """The one-line error for a library that is not installed."""
    return BackendUnavailable(
        f"{backend}: the task library is not installed ({exc.name}); install it with `pip install -e '.[libraries]'`"
    )


class Settlement:
    """How imqueue settled one delivered task; the task's thread waits for it."""

    __slots__ = ("_event", "outcome")

    def __init__(self) -> None:
        self._event = threading.Event()
        self.outcome = ACK

    def settle(self, outcome: str) -> None:
        self.outcome = outcome
        self._event.set()

    def wait(self, closing: threading.Event) -> str:
        """The outcome; ``REQUEUE`` once ``closing`` is set and nobody settled it (a task
        handed over while the consumer was closing must not hold the worker's stop)."""
        while not self._event.wait(SETTLE_POLL_S):
            if closing.is_set():
                return REQUEUE
        return self.outcome


class _LastError(logging.Handler):
    """Keeps the first line of the last ERROR a library logs on one thread: what a worker that
    ends as it starts said (a library that catches its own exception only logs it)."""

    def __init__(self, thread_id: int) -> None:
        super().__init__(logging.ERROR)
        self.thread_id, self.line = thread_id, ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread_id:
            text = record.getMessage().strip().splitlines()
            cause = first_line(record.exc_info[1]) if record.exc_info and record.exc_info[1] else ""
            self.line = "; ".join(part for part in (text[0] if text else "", cause) if part)


class LibraryBackend(Backend):
    """A task library on its broker. Subclasses name the library's worker and producer."""

    capabilities = LIBRARY
    options: ClassVar[tuple[Option, ...]] = (CONNECT_TIMEOUT,)
    drain_skips_empty = True  # a drain's consumer would start and stop a library worker

    def probe(self, role: str) -> None:
        """Open and close one connection named for ``role``, under ``connect_timeout_s``: before
        a library's worker or producer starts, so that a server that is down or silent is
        reported in the one line of every backend within the connect timeout (the libraries'
        own connections retry for long, or wait without a timeout). Raises
        ``BackendUnavailable``."""
        raise NotImplementedError

    #: Not offered: the library owns its workers' connections, names them (where it lets us) by
    #: namespace rather than by queue, and reconnects in its own way (docs/how-to/task-libraries.md).
    cut_refusal = "a task library's own connections are not cut by the run (the library owns them)"

    @classmethod
    def can_cut_connections(cls) -> bool:
        return False

    def cut_connections(self, queue: str) -> int:
        raise NotSupported(f"{self.name}: {self.cut_refusal}")

    @property
    def batch_api(self) -> bool:
        """The ``batch_api`` option, where the library has a batch API (``BATCH_API``)."""
        return bool(self.option_values.get("batch_api", False))

    def environment(self) -> dict[str, Any]:
        return {**super().environment(), "batch_api": self.batch_api}


class LibraryProducer(Producer):
    """Enqueues one task per message (``enqueue``), or a send call's tasks with the library's
    batch API (``enqueue_many``) when the backend's ``batch_api`` option is on."""

    def __init__(self, backend: LibraryBackend, queue: str) -> None:
        backend.probe("producer")
        self.backend, self.queue = backend, queue

    def send_batch(self, messages: Sequence[bytes]) -> None:
        with self.backend.converting("send to"):
            if self.backend.batch_api and len(messages) > 1:
                self.enqueue_many(list(messages))
            else:
                for body in messages:
                    self.enqueue(body)

    def enqueue(self, body: bytes) -> None:
        raise NotImplementedError

    def enqueue_many(self, bodies: list[bytes]) -> None:
        raise NotImplementedError


class TaskCounter:
    """A run consumer's counting, called by the library's worker thread with each task's
    message: ``queues.workers.counting.count_bodies`` and a ``BatchReport`` sent at once, before the task
    returns (and the library acks it). Once ``close``d, it counts nothing more: a task handed
    over after the consumer stopped goes back to the queue."""

    def __init__(
        self,
        index: int,
        channel: Any,
        shares: Any,
        hists: Any,
        window: tuple[int, int],
        steady: bool,
        shift: Any = None,
    ) -> None:
        self.index, self.channel, self.shares, self.hists = index, channel, shares, hists
        self.window, self.steady, self.shift = window, steady, shift
        self.lock = threading.Lock()  # the final histograms are flushed by the consumer's own thread
        self.open = True
        self.runner_gone: BaseException | None = None

    def __call__(self, body: bytes) -> str:
        with self.lock:
            if not self.open:
                return REQUEUE
            flat, raw_sum, corrupt, poison, received_ns, window_events = count_one(
                body, self.shares, self.hists, self.window, self.steady, self.shift
            )
            hists = self.hists.flush() if self.hists.due() else None
            report = BatchReport(self.index, flat, raw_sum, corrupt, poison, received_ns, hists, window_events)
            try:
                self.channel.send(report)
            except RunnerGone as exc:
                self.runner_gone, self.open = exc, False
                return REQUEUE
        return DEAD if poison else ACK

    def close(self) -> None:
        with self.lock:
            self.open = False


class LibraryConsumer(Consumer):
    """The library's worker on a thread of this process, handing its tasks to imqueue.

    Subclasses implement ``run_worker`` (the library's worker loop; returns when asked to stop)
    and ``stop_worker`` (asks it to, from another thread); the library's task function calls
    ``deliver`` (through ``CURRENT`` or a closure) and maps what it returns to the library's way
    of requeueing or failing a task.
    """

    def __init__(self, backend: LibraryBackend, queue: str) -> None:
        backend.probe("consumer")
        self.backend, self.queue = backend, queue
        self.inbox: queue_module.SimpleQueue[tuple[bytes, Settlement]] = queue_module.SimpleQueue()
        self.held: dict[int, Settlement] = {}
        self.next_token = 0
        self.closing = threading.Event()
        self.started = threading.Event()  # set by ``run_worker`` once the library's worker runs
        self.failure: BaseException | None = None
        self.last_error = ""  # the last error the library logged on its worker's thread
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"imq-{backend.name}-worker")
        self.thread.start()
        self._await_start()

    def _await_start(self) -> None:
        """Return once the library's worker runs (so that ``Ready`` means it), or raise what
        stopped it: a worker that cannot start is reported, never waited for."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.started.wait(0.02):
            if self.failure is not None or not self.thread.is_alive():
                self.closing.set()
                self._check(starting=True)
            if time.monotonic() > deadline:
                self.close()
                raise BackendUnavailable(
                    f"{self.backend.name}: the library's worker did not start within {START_TIMEOUT_S:.0f} s"
                )

    # -- the library's side (its worker's thread) --------------------------------------------

    def _run(self) -> None:
        CURRENT.set(self)
        last_words = _LastError(threading.get_ident())
        logging.getLogger().addHandler(last_words)
        try:
            self.run_worker()
        except BaseException as exc:  # noqa: BLE001 - handed to the imqueue side, which raises it
            if not self.closing.is_set() or not self.started.is_set():
                log.error("%s: the library's worker ended: %s", self.backend.name, first_line(exc))
                self.failure = exc
        finally:
            logging.getLogger().removeHandler(last_words)
            self.last_error = last_words.line

    def run_worker(self) -> None:
        """The library's worker loop, on this consumer's thread; sets ``started`` once it runs
        and returns once ``stop_worker`` asked it to."""
        raise NotImplementedError

    def stop_worker(self) -> None:
        raise NotImplementedError

    def deliver(self, body: bytes) -> str:
        """Called by the task: count ``body`` (a run's consumer: ``consume_until``), or hand it
        over and wait until imqueue settled it; ``ACK``, ``REQUEUE`` or ``DEAD``. A consumer that
        is closing gives it back at once (``REQUEUE``)."""
        counter = self.counter
        if counter is not None:
            return counter(body)
        if self.closing.is_set():
            return REQUEUE
        settlement = Settlement()
        self.inbox.put((body, settlement))
        return settlement.wait(self.closing)

    # -- imqueue's side ----------------------------------------------------------------------

    #: ``queues.workers.consumer.consume`` calls ``consume_until`` instead of receiving.
    calls_back = True
    counter: TaskCounter | None = None

    def consume_until(
        self,
        stop: Any,
        index: int,
        channel: Any,
        shares: Any,
        hists: Any,
        window: tuple[int, int],
        steady: bool,
        shift: Any = None,
    ) -> None:
        """A run's consumer: the library's worker counts and reports each task on its own thread
        (``TaskCounter``) until ``stop`` is set; raises what ended the worker, or ``RunnerGone``."""
        self.counter = counter = TaskCounter(index, channel, shares, hists, window, steady, shift)
        try:
            while not stop.is_set():
                self._check()
                if counter.runner_gone is not None:
                    raise counter.runner_gone
                self._count_handed_over(counter)
                time.sleep(CALLBACK_POLL_S)
        finally:
            counter.close()
            self.counter = None

    def _count_handed_over(self, counter: TaskCounter) -> None:
        """Count what the library's worker handed over before ``consume_until`` began (it
        consumes from the moment it starts: a task sent before the run's start, such as a
        poison fault, waits in the inbox) or just as it began."""
        while True:
            try:
                body, settlement = self.inbox.get_nowait()
            except queue_module.Empty:
                return
            settlement.settle(counter(body))

    def receive_batch(self, max_messages: int, timeout_s: float) -> Batch:
        self._check()
        bodies: list[bytes] = []
        receipts: list[int] = []
        try:
            # the library hands over nothing more while we hold its task: do not wait then
            first = self.inbox.get(timeout=timeout_s) if not self.held else self.inbox.get_nowait()
            while True:
                self._hold(first, bodies, receipts)
                if len(bodies) >= max_messages:
                    break
                first = self.inbox.get_nowait()
        except queue_module.Empty:
            pass
        if not bodies:
            self._check()
        return Batch(bodies, receipts)

    def _hold(self, item: tuple[bytes, Settlement], bodies: list[bytes], receipts: list[int]) -> None:
        body, settlement = item
        token, self.next_token = self.next_token, self.next_token + 1
        self.held[token] = settlement
        bodies.append(body)
        receipts.append(token)

    def _check(self, *, starting: bool = False) -> None:
        if self.failure is not None:
            exc, self.failure = self.failure, None
            if isinstance(exc, QueueError):
                raise exc
            raise self.backend.converted(exc, "run the library's worker on") from exc
        if starting:
            said = f": {self.last_error}" if self.last_error else ""
            raise BackendUnavailable(f"{self.backend.name}: the library's worker ended as it started{said}")
        if not self.thread.is_alive() and not self.closing.is_set():
            raise BackendUnavailable(f"{self.backend.name}: the library's worker stopped")

    def ack(self, batch: Batch) -> None:
        self._settle(batch, ACK)

    def nack(self, batch: Batch, *, requeue: bool = True) -> None:
        self._settle(batch, REQUEUE if requeue else DEAD)

    def _settle(self, batch: Batch, outcome: str) -> None:
        for token in batch.receipts or ():
            settlement = self.held.pop(token, None)
            if settlement is not None:
                settlement.settle(outcome)

    def close(self) -> None:
        """Stop the library's worker; what this consumer still holds goes back (``REQUEUE``)
        first, so that a worker whose stop waits for its running task is not kept waiting."""
        if self.closing.is_set():
            return
        self.closing.set()
        for settlement in self.held.values():
            settlement.settle(REQUEUE)
        self.held.clear()
        while True:  # handed over after the last receive: give back too
            try:
                self.inbox.get_nowait()[1].settle(REQUEUE)
            except queue_module.Empty:
                break
        try:
            self.stop_worker()
        finally:
            self.thread.join(timeout=STOP_JOIN_S)
            if not self.thread.is_alive():
                # a worker still running keeps its connections: closing them under it could
                # reset a socket with acks not yet sent; they go with the process
                self.after_stop()

    def after_stop(self) -> None:
        """Release what the worker's thread used (connections), once it stopped or was left."""
