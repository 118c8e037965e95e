"""The backend interface every queue technology implements.

Modelled on the OpenMessaging Benchmark driver API and dramatiq's ``Broker``, cut to what the
lab needs. Backends move opaque byte strings and time nothing: the runner stamps events and
computes every latency figure.

One deliberate difference from a usual broker interface: ``Consumer.receive_batch`` returns a
``Batch`` (a list of bodies plus backend receipts) instead of a list of ``Delivery`` objects.
Building one Python object per message cost about 0.1 s per million messages on this machine,
as much as the whole reference run of the in-memory benchmark.
"""

from __future__ import annotations

import copy
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit, urlunsplit

from queues.backends.options import Option, OptionValue, options_resolve
from queues.errors import BackendUnavailable, NotSupported, OperationFailed, QueueError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The option of every server backend: how long to wait for a server to accept a connection
#: and answer its first command (the handshake). A server that accepts TCP and then says
#: nothing is reported after this, not after a driver's default of 10-30 s.
CONNECT_TIMEOUT = Option(
    "connect_timeout_s",
    float,
    3.0,
    "longest wait for the server to accept a connection and answer its handshake",
    minimum=0.1,
    maximum=600,
    unit="s",
)


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
    # send_batch returns once the server holds the messages; False: what a producer killed or cut
    # off had sent may never have arrived (RabbitMQ without publisher confirms)
    confirmed_sends: bool = True
    holds_many: bool = True  # a consumer may hold many un-acked messages (False: one at a time, a task library)

    def extend(self, **changes: bool) -> Capabilities:
        """A copy with some guarantees changed (kombu's ``Implements.extend``)."""
        return replace(self, **changes)

    def as_dict(self) -> dict[str, bool]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def guarantee(self) -> str:
        """The delivery guarantee in words: ``at-least-once`` when messages are acked and a dead
        consumer's come back, else ``at-most-once`` (a message can be lost, never doubled by
        the backend)."""
        return "at-least-once" if self.acks and self.redelivers_on_crash else "at-most-once"


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
    #: Declared on the class; an instance whose options change a guarantee (a persistent
    #: RabbitMQ queue, ``redis-list --option ack=false``) replaces it with its own.
    capabilities: Capabilities
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
    #: The URL schemes the backend's driver understands (checked in ``parsing_url``); empty:
    #: the driver's own parser decides (libpq also takes ``key=value`` strings).
    url_schemes: ClassVar[tuple[str, ...]] = ()
    #: Seconds after a consumer's connection is gone (it was killed) within which the server
    #: makes what it held readable again: the run's final drain waits this long after a kill
    #: before it concludes the queue is empty. 0 where closing the connection releases it at
    #: once (SQL transactions roll back); a backend whose delay follows an option sets it per
    #: instance (Redis: a heartbeat expiry or a claim idle time).
    release_after_s: float = 0.0
    #: ``depth`` counts everything a new consumer could read once the run's consumers have
    #: stopped, so the final drain opens no consumer on a queue whose depth is then 0. Where a
    #: consumer is cheap the drain reads anyway (a quiet period, as a second look); the task
    #: libraries set it: their consumer starts and stops a library worker, a second or two.
    drain_skips_empty: ClassVar[bool] = False

    def __init__(self, *, url: str = "", namespace: str = "imq", **options: Any) -> None:
        """Raises ``InvalidSpec`` for an option the class does not declare or a value it does
        not allow; nothing is connected yet, so a bad option costs nothing."""
        self.url = url
        self.namespace = namespace
        #: Random, per instance: names the control connection, so that cutting it (or an
        #: operator's kill) finds this runner's and not another's of the same namespace.
        self.instance_tag = secrets.token_hex(4)
        #: Every declared option's value, defaults filled in (what the run records).
        self.option_values: dict[str, OptionValue] = options_resolve(type(self).options, options, owner=self.name)

    @property
    def connect_timeout_s(self) -> float:
        """The ``connect_timeout_s`` option (``CONNECT_TIMEOUT``), which every server backend
        declares: how long a connection and its handshake may take."""
        return float(self.option_values["connect_timeout_s"])

    def connect(self) -> None:
        """Open the control connection: the runner's own, which declares, purges, measures
        depth and deletes (workers have connections of their own). Idempotent.

        Raises ``BackendUnavailable`` naming the URL (password hidden) and ``url_setting``.
        """

    def close(self) -> None:
        """Close the control connection. Idempotent, and quiet on a connection already lost
        (``reconnecting`` closes a dead one before opening the next)."""

    def reconnecting(
        self, operation: Callable[..., T], *args: Any, attempts: int = 2, pause_s: float = 0.0, **kwargs: Any
    ) -> T:
        """``operation(*args, **kwargs)``: a control operation of this backend (``declare``,
        ``purge``, ``delete``, ``depth``, ``environment``: idempotent), tried up to ``attempts``
        times. When the control connection turns out lost (``BackendUnavailable``: a broker
        restart, a network blip, a server that ended the session), it is closed and the next
        attempt, ``pause_s`` later, opens a new one: one dropped connection costs the runner
        one round trip, never the run. ``OperationFailed`` (the server answered no) is raised
        at once, since asking again will not help.

        Raises the last ``BackendUnavailable`` when every attempt failed; the connection is
        closed then too, so a later call starts on a new one."""
        for attempt in range(1, attempts + 1):
            try:
                return operation(*args, **kwargs)
            except BackendUnavailable as exc:
                self.close()
                if attempt >= attempts:
                    raise
                log.info("%s: the control connection was lost (%s); reconnecting", self.name, exc)
                time.sleep(pause_s)
        raise ValueError(f"attempts must be at least 1, got {attempts}")

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

    #: Why ``cut_connections`` is refused, where it is (``can_cut_connections`` is false).
    cut_refusal: ClassVar[str] = "there is no server whose connections could be cut"

    @classmethod
    def can_cut_connections(cls) -> bool:
        """Whether ``cut_connections`` is implemented (asked before a run, without I/O)."""
        return cls.cut_connections is not Backend.cut_connections

    def depth(self, queue: str) -> int:
        """Messages in ``queue`` not yet acked: ready plus in flight, where the backend can see
        in-flight messages (AMQP cannot: RabbitMQ adds its unacked ones only where the
        management API tells them, and ``depth_detail`` shows the parts).

        Raises ``NotSupported`` where it cannot be known; never guesses.
        """
        raise NotSupported(f"{self.name} cannot measure queue depth")

    def depth_detail(self, queue: str) -> dict[str, int | None]:
        """``total`` (the same as ``depth``) and the parts shown apart where the backend has
        them (ready, unacked, stored, ...); ``None`` for a part the backend cannot see. By
        default just the total. The runner samples this once an interval."""
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

    def list_queues(self, namespace: str) -> list[str]:
        """The queues under ``namespace`` (``<namespace>.<anything>``) that still exist on the
        server, sorted: what ``cleanup`` looks at. Read-only.

        Raises ``NotSupported`` where the server cannot list them (AMQP: the caller then asks
        ``queue_exists`` about the names it knows).
        """
        raise NotSupported(f"{self.name} cannot list its queues")

    def queue_exists(self, queue: str) -> bool:
        """Whether anything of ``queue`` (its dead letters too) is still on the server.
        Read-only. By default: whether ``list_queues`` finds it."""
        return queue in self.list_queues(queue.rpartition(".")[0])

    def cut_connections(self, queue: str) -> int:
        """Make the server end the workers' connections (producers', consumers') of ``queue``:
        the ``cut-connections`` fault. They are found by names that carry the queue, so another
        run's connections, and this backend's own control connection, are never touched. Asks
        over an admin connection of its own, bounded by timeouts, so a runner may call it from
        its watch loop (or a thread) while the run goes on.

        Returns how many connections the server ended: 0 when none was found (the workers have
        not connected yet, or the server lists them late: the caller may ask again).
        Raises ``NotSupported`` where no server holds the connections (the memory backends),
        ``BackendUnavailable`` or ``OperationFailed`` when the server cannot be asked."""
        raise NotSupported(f"{self.name}: {self.cut_refusal}")

    def cut_control_connection(self) -> int:
        """Make the server end this backend's control connection (the runner's own), found by
        ``instance_tag``; the workers' are left alone. Returns how many it ended (0 or 1: 0
        when none is open or the server does not list it yet). Raises as ``cut_connections``."""
        raise NotSupported(f"{self.name}: there is no server whose connections could be cut")

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
    def parsing_url(self) -> Iterator[None]:
        """Around reading ``self.url`` into a driver's parameters (no I/O): a URL with another
        scheme than ``url_schemes``, or anything the driver's parser raises (pika an
        ``IndexError`` on ``nonsense``, psycopg a ``ProgrammingError``, ``urlsplit`` a
        ``ValueError`` on a bad port), becomes one ``BackendUnavailable`` line naming the setting
        and the shape of a good URL. Any exception counts: the block only parses."""
        try:
            if self.url_schemes:
                scheme = urlsplit(self.url).scheme
                if scheme not in self.url_schemes:
                    raise ValueError(f"the scheme must be one of {', '.join(self.url_schemes)}, not {scheme!r}")
            yield
        except QueueError:
            raise
        except Exception as exc:
            raise self.malformed_url(exc) from exc

    def malformed_url(self, exc: BaseException) -> BackendUnavailable:
        """The one-line error for a URL the driver cannot read. Raise it ``from exc``."""
        where = f"; set {self.url_setting} to a URL like {redact_url(self.default_url)}" if self.url_setting else ""
        return BackendUnavailable(f"{self.name}: malformed URL {self.describe_url()} ({self._cause(exc)}){where}")

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
        return f"{self.name}: cannot {doing} {self.describe_url()} ({self._cause(exc)})"

    def _cause(self, exc: BaseException) -> str:
        """The first line of ``exc``, with the URL hidden as in ``describe_url`` where the driver
        quotes it (libpq quotes a URL it cannot parse, password and all)."""
        cause = first_line(exc)
        return cause.replace(self.url, self.describe_url()) if self.url else cause


def first_line(exc: BaseException) -> str:
    """The first line of what ``exc`` says, for a one-line message."""
    # pika's connection errors have an empty str() and say everything in their repr()
    text = str(exc).strip() or repr(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def redact_url(url: str) -> str:
    """``scheme://user:***@host/path``: a URL safe to print (one ``urlsplit`` cannot read is
    not shown at all: it might hold a password)."""
    if not url:
        return "(no URL)"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(not shown: it may hold a password)"
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
