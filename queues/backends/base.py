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
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

from queues.errors import BackendUnavailable, NotSupported
from queues.options import Option, OptionValue, options_resolve


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
        """Give the messages back (``requeue=True``) or set them aside as dead letters."""
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
    #: Where the server is when nothing is configured (the local servers of DEVELOPERS.md).
    default_url: ClassVar[str] = ""
    #: Producers and consumers run as threads of the runner's process, not as processes.
    threads_only: ClassVar[bool] = False
    #: The options ``--option NAME=VALUE`` may set; a subclass extends its parent's tuple.
    options: ClassVar[tuple[Option, ...]] = ()

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
        """Remove ``queue`` and everything it left on the server. Idempotent."""
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

    def unavailable(self, exc: BaseException, doing: str = "connect to") -> BackendUnavailable:
        """The one-line error for a server that is down or refuses us: names the URL (password
        hidden), the cause, and the setting to change. Raise it ``from exc``."""
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = f"; check the server or set {self.url_setting}" if self.url_setting else ""
        return BackendUnavailable(f"{self.name}: cannot {doing} {self.describe_url()} ({cause}){where}")

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
