"""The backend interface every queue technology implements.

Modelled on the OpenMessaging Benchmark driver API and dramatiq's ``Broker``, cut to what the
lab needs. Backends move opaque byte strings and time nothing: the runner stamps events and
computes every latency figure.

One deliberate difference from the sketch in STYLE.md: ``Consumer.receive_batch`` returns a
``Batch`` (a list of bodies plus backend receipts) instead of a list of ``Delivery`` objects.
Building one Python object per message cost about 0.1 s per million messages on this machine,
as much as the whole reference run of the in-memory benchmark.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

from queues.errors import BackendUnavailable, NotSupported, OperationFailed, QueueError
from queues.options import Option, OptionValue, options_resolve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Capabilities:
    """What a backend guarantees, declared as data so the UI and the tests read it."""

    acks: bool = True  # at-least-once; False = fire-and-forget (lost on a crash)
    redelivers_on_crash: bool = True  # un-acked messages of a dead consumer come back
    durable: bool = True  # survives a server restart
    depth: bool = True  # depth() is exact and cheap
    native_batch: bool = False  # one round trip per batch
    push: bool = False  # the server wakes the consumer (LISTEN, basic_consume)
    fifo: bool = True  # one producer's messages arrive in order to a single consumer
    processes: bool = True  # producers and consumers may be separate OS processes

    def extend(self, **changes: bool) -> Capabilities:
        """A copy with some guarantees changed (kombu's ``Implements.extend``)."""
        return replace(self, **changes)

    def as_dict(self) -> dict[str, bool]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class Batch:
    """Messages returned by one ``receive_batch`` call.

    ``bodies[i]`` is the payload of message ``i``; ``receipts`` is whatever the backend needs to
    ack or nack them (delivery tags, row ids, stream ids), or ``None`` for a backend without
    acknowledgements. A batch is owned by the consumer that received it.
    """

    bodies: Sequence[bytes] = field(default_factory=list)
    receipts: Any = None

    def __len__(self) -> int:
        return len(self.bodies)

    def __bool__(self) -> bool:
        return bool(self.bodies)

    def subset(self, indices: Sequence[int]) -> Batch:
        """The messages at ``indices``, to ack or nack part of a batch (poison, say)."""
        receipts = self.receipts
        if isinstance(receipts, list):
            receipts = [receipts[i] for i in indices]
        return Batch([self.bodies[i] for i in indices], receipts)


class Producer:
    """Sends messages to one queue. Not thread-safe: one per worker."""

    def send_batch(self, messages: Sequence[bytes]) -> None:
        """Send ``messages`` in order. The primitive every backend implements.

        Returns once the backend has accepted them (with confirms, once confirmed).
        Raises ``BackendUnavailable`` if the connection is lost; some messages of the batch
        may then have been sent (the ledger will tell).
        """
        raise NotImplementedError

    def send(self, message: bytes) -> None:
        """Send one message: a batch of one."""
        self.send_batch([message])

    def close(self) -> None:
        """Flush and release the connection. Idempotent."""


class Consumer:
    """Receives messages from one queue. Not thread-safe: one per worker."""

    def receive_batch(self, max_messages: int, timeout_s: float) -> Batch:
        """Up to ``max_messages`` messages, blocking at most ``timeout_s`` seconds.

        Returns an empty ``Batch`` when idle, never ``None``. Messages stay un-acked (invisible
        to other consumers where the backend supports it) until ``ack`` or ``nack``.
        Raises ``BackendUnavailable`` if the connection is lost.
        """
        raise NotImplementedError

    def ack(self, batch: Batch) -> None:
        """Mark every message of ``batch`` done. Acking an empty batch does nothing."""
        raise NotImplementedError

    def nack(self, batch: Batch, *, requeue: bool = True) -> None:
        """Give the messages back (``requeue=True``) or set them aside as dead letters
        (``requeue=False``: never delivered again, readable with ``Backend.dead_letters``)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection; un-acked messages return to the queue where the backend
        can (see ``Capabilities.redelivers_on_crash``). Idempotent."""


class Backend:
    """A queue technology: declares, purges, measures and hands out producers and consumers.

    The constructor does no I/O; ``connect`` does. Every queue of a run is named
    ``<namespace>.<run id>`` by the runner, so ``purge`` and ``delete`` never touch another run.
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    #: The environment setting users change to point the backend elsewhere (named in errors).
    url_setting: ClassVar[str | None] = None
    #: Where the server is when nothing is configured: the local server on its standard port.
    default_url: ClassVar[str] = ""
    #: Driver exceptions meaning the server cannot be reached or the connection was lost:
    #: ``converting`` turns them into ``BackendUnavailable`` (the run fails at once).
    unavailable_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    #: Driver exceptions meaning the server answered but the operation failed: ``converting``
    #: turns them into ``OperationFailed``. Checked after ``unavailable_errors``, so a driver's
    #: base exception class may stand here for "anything else it raises".
    failed_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    #: The options ``--option NAME=VALUE`` may set; a subclass extends its parent's tuple.
    options: ClassVar[tuple[Option, ...]] = ()
    #: Seconds after a consumer's connection is gone (it was killed) within which the server
    #: makes what it held readable again: the run's final drain waits this long after a kill
    #: before it concludes the queue is empty. 0 where closing the connection releases it at
    #: once (SQL transactions roll back); a backend whose delay follows an option sets it per
    #: instance (Redis: a heartbeat expiry or a claim idle time).
    release_after_s: float = 0.0

    def __init__(self, *, url: str = "", namespace: str = "imq", **options: Any) -> None:
        """Raises ``InvalidSpec`` for an option the class does not declare or a value it does
        not allow; nothing is connected yet, so a bad option costs nothing."""
        self.url = url
        self.namespace = namespace
        #: Every declared option's value, defaults filled in (what the run records).
        self.option_values: dict[str, OptionValue] = options_resolve(type(self).options, options, owner=self.name)

    def connect(self) -> None:
        """Open the administrative connection. Idempotent.

        Raises ``BackendUnavailable`` naming the URL (password hidden) and ``url_setting``.
        """

    def close(self) -> None:
        """Close the administrative connection. Idempotent."""

    def declare(self, queue: str) -> None:
        """Create ``queue`` if it does not exist. Idempotent."""
        raise NotImplementedError

    def purge(self, queue: str) -> int:
        """Remove every message of ``queue``; return how many were removed."""
        raise NotImplementedError

    def delete(self, queue: str) -> None:
        """Remove ``queue`` and everything it left on the server (dead letters too). Idempotent.

        Implementations run inside ``deleting``, so a failure names the queue in the log."""
        raise NotImplementedError

    def depth(self, queue: str) -> int:
        """Messages in ``queue`` not yet acked: ready plus in flight, where the backend can see
        in-flight messages (AMQP cannot: RabbitMQ's depth is its ready count, and
        ``depth_detail`` shows the parts).

        Raises ``NotSupported`` where it cannot be known; never guesses.
        """
        raise NotSupported(f"{self.name} cannot measure queue depth")

    def depth_detail(self, queue: str) -> dict[str, int | None]:
        """The parts of ``depth`` shown apart (ready, in flight, ...); ``None`` for a part the
        backend cannot see. By default just the total."""
        return {"total": self.depth(queue)}

    def release_dead_consumers(self, queue: str) -> None:
        """Make what consumers killed by the runner held on ``queue`` readable again, once every
        consumer of the run is gone (before the final drain). The servers do it themselves when
        a connection closes (``release_after_s``), so by default there is nothing to do; a queue
        in the runner's memory whose killed consumers may hold its lock (``memory-mp``) resets
        it here. Idempotent."""

    def dead_letters(self, queue: str) -> list[bytes]:
        """The bodies set aside by ``nack(requeue=False)`` on ``queue``, in any order.

        Backends say whether reading them takes them away (RabbitMQ's does: AMQP can only get
        messages off a queue). Raises ``NotSupported`` where the backend keeps none.
        """
        raise NotSupported(f"{self.name} keeps no dead letters")

    def producer(self, queue: str) -> Producer:
        """A new producer with its own connection, for one worker."""
        raise NotImplementedError

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        """A new consumer with its own connection, for one worker."""
        raise NotImplementedError

    def for_worker(self) -> Backend:
        """The copy a forked worker uses: same settings, no inherited connection.

        Backends whose queue lives in the runner's memory (``memory-mp``) override this to
        share it.
        """
        clone = copy.copy(self)
        clone.__dict__.update(self._fresh_state())
        return clone

    def _fresh_state(self) -> dict[str, Any]:
        """Attributes reset in ``for_worker`` copies (connections, caches)."""
        return {}

    def environment(self) -> dict[str, Any]:
        """Server version and the durability settings in force, for the run's record."""
        return {}

    def describe_url(self) -> str:
        """The URL with its password hidden, for messages."""
        return redact_url(self.url)

    @contextmanager
    def converting(self, doing: str, *, unavailable: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
        """Convert the driver exceptions raised in the block at the boundary, keeping the cause
        (``from exc``): ``unavailable_errors`` (and ``unavailable``, e.g. a malformed URL while
        connecting) become ``BackendUnavailable``, ``failed_errors`` ``OperationFailed``;
        anything else (a bug) passes through untouched. ``doing`` completes "cannot ... <URL>",
        e.g. ``"receive from"``."""
        try:
            yield
        except QueueError:
            raise
        except unavailable as exc:
            raise self.unavailable(exc, doing) from exc
        except self.unavailable_errors + self.failed_errors as exc:
            raise self.converted(exc, doing) from exc

    @contextmanager
    def deleting(self, queue: str) -> Iterator[None]:
        """``converting`` for ``delete``, logging a failure at WARNING: the queue left behind
        on the server is named in the log (the run's own error may say nothing of it)."""
        try:
            with self.converting(f"delete queue {queue} on"):
                yield
        except QueueError as exc:
            log.warning("%s: queue %s is left on the server: %s", self.name, queue, exc)
            raise

    def converted(self, exc: BaseException, doing: str) -> QueueError:
        """The ``queues.errors`` error for driver exception ``exc`` (raise it ``from exc``):
        ``BackendUnavailable`` for the ``unavailable_errors``, else ``OperationFailed``. For
        callback-driven drivers (pika) that hand over an exception instead of raising it."""
        if isinstance(exc, self.unavailable_errors):
            return self.unavailable(exc, doing)
        return OperationFailed(self.error_message(exc, doing))

    def unavailable(self, exc: BaseException, doing: str = "connect to") -> BackendUnavailable:
        """The one-line error for a server that is down or refuses us: the message of
        ``error_message`` and the setting to change. Raise it ``from exc``."""
        where = f"; check the server or set {self.url_setting}" if self.url_setting else ""
        return BackendUnavailable(f"{self.error_message(exc, doing)}{where}")

    def error_message(self, exc: BaseException, doing: str) -> str:
        """``<backend>: cannot <doing> <URL, password hidden> (<cause's first line>)``: the one
        format of every converted error."""
        # pika's connection errors have an empty str() and say everything in their repr()
        text = str(exc).strip() or repr(exc).strip()
        cause = text.splitlines()[0] if text else type(exc).__name__
        return f"{self.name}: cannot {doing} {self.describe_url()} ({cause})"

def redact_url(url: str) -> str:
    """``scheme://user:***@host/path``: a URL safe to print."""
    from urllib.parse import urlsplit, urlunsplit

    if not url:
        return "(no URL)"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def log_nacked(logger: logging.Logger, backend: str, count: int, *, requeue: bool) -> None:
    """One INFO line per ``nack`` call, never per message (nacks are rare: poison, or a consumer
    giving back what it held)."""
    if count:
        fate = "requeued" if requeue else "set aside as dead letters"
        logger.info("%s: %d message(s) nacked and %s", backend, count, fate)
