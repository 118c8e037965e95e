"""RabbitMQ through pika: ``rabbitmq``, a queue per run, at-least-once.

Connection style: pika's asynchronous ``SelectConnection`` driven synchronously (``_amqp.Link``),
one connection per producer and per consumer. ``BlockingConnection.basic_publish`` flushes the
socket after every message (~11-18k msgs/s on this machine); writing the frames of a whole batch
and flushing once is what an asynchronous client does and is what this backend does.

- Queues: ``<queue>`` (``queue_type=classic`` by default, or ``quorum``), durable, with a
  dead-letter queue ``<queue>.dead`` bound through the default exchange
  (``x-dead-letter-exchange``), so ``nack(requeue=False)`` sets messages aside there.
- Messages are transient (delivery mode 1) unless ``persistent=true`` (quorum queues store every
  message on disk regardless).
- Publisher confirms, option ``confirms``: ``off`` (default), ``message`` (wait for each confirm:
  one round trip per message) or ``batch`` (publish the batch, then wait for all its confirms).
- Consumer: ``basic_qos(prefetch)`` (default 1000), ``basic_consume``; a batch is whatever has
  arrived, up to the asked size. Ack: ``basic_ack(last tag, multiple=True)`` when the batch is
  the oldest unacked deliveries (always, in the runner), else one ack per tag.
- A killed consumer's TCP connection closes and the broker requeues its unacked messages.
- ``depth`` is the queue's ready messages (``queue.declare`` passive) plus its unacked ones where
  the management API (option ``management_port``) tells them; AMQP does not. Without the API,
  depth is the ready count and ``depth_detail``'s ``unacked`` is ``None``
  (``rabbitmq_management``).
- A worker's lost connection fails the run (``BackendUnavailable``); the runner's control
  connection is replaced (``Backend.reconnecting``). Heartbeats (10 s), ``connect_timeout_s``
  on the opening and a deadline on every wait make sure nothing hangs.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import pika
import pika.exceptions
import pika.spec

from queues.backends import rabbitmqctl
from queues.backends._amqp import RPC_TIMEOUT_S, ControlLink, Link, connection_name
from queues.backends.base import CONNECT_TIMEOUT, Batch, Capabilities, Consumer, Producer, log_nacked
from queues.backends.options import Option
from queues.backends.rabbitmq_management import ManagementApi
from queues.errors import OperationFailed

log = logging.getLogger(__name__)

CONFIRMS = ("off", "message", "batch")
#: How long the dead-letter count must hold still before ``dead_letters`` reads the messages.
DEAD_LETTER_SETTLE_S = 0.1
QUEUE_TYPES = ("classic", "quorum")
#: The roles of a run's worker connections.
WORKER_ROLES = ("producer", "consumer")


class RabbitMQBackend(ControlLink):
    """Options: ``queue_type`` (classic|quorum), ``prefetch`` (1000), ``confirms``
    (off|message|batch), ``persistent`` (false)."""

    name = "rabbitmq"
    capabilities = Capabilities(durable=False, native_batch=False, push=True)
    url_setting = "IMQ_AMQP_URL"
    default_url = "amqp://guest:guest@127.0.0.1:5672/%2F"
    url_schemes = ("amqp", "amqps")
    unavailable_errors = (pika.exceptions.AMQPConnectionError, OSError)
    # a channel closed by the broker (a missing queue, a precondition) on a live connection
    failed_errors = (pika.exceptions.AMQPError,)
    options = (
        Option("queue_type", str, "classic", "the queue's type", choices=QUEUE_TYPES),
        # basic_qos carries the count in a 16-bit field
        Option(
            "prefetch",
            int,
            1000,
            "basic_qos prefetch count: unacked messages a consumer may hold",
            minimum=1,
            maximum=65_535,
            unit="messages",
        ),
        Option(
            "confirms", str, "off", "publisher confirms: wait for each message, or once per send call", choices=CONFIRMS
        ),
        Option("persistent", bool, False, "persistent messages (delivery mode 2)"),
        Option(
            "management_port",
            int,
            15672,
            "port of the management API, asked for unacked messages (depth = ready + unacked); 0: never asked",
            minimum=0,
            maximum=65_535,
        ),
        CONNECT_TIMEOUT,
    )
    # the broker requeues a closed connection's unacked messages as soon as it notices the
    # close, asynchronously; and ``depth`` (ready only) cannot show them on their way back
    release_after_s = 1.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.queue_type = str(self.option_values["queue_type"])
        self.confirms = str(self.option_values["confirms"])
        self.prefetch = int(self.option_values["prefetch"])
        self.persistent = bool(self.option_values["persistent"])
        self.management = ManagementApi(self.url, int(self.option_values["management_port"]))
        if self.persistent or self.queue_type == "quorum":
            self.capabilities = self.capabilities.extend(durable=True)
        if self.confirms == "off":  # a publish returns before the broker has it
            self.capabilities = self.capabilities.extend(confirmed_sends=False)

    def _admin(self, method: str, doing: str, **kwargs: Any) -> Any:
        link = self.link
        return link.call(getattr(link.channel, method), doing=doing, **kwargs).method

    def declare(self, queue: str) -> None:
        dead = dead_letter_queue(queue)
        args = {"x-queue-type": self.queue_type}
        self._admin("queue_declare", "declare a queue on", queue=dead, durable=True, arguments=args)
        args |= {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}
        self._admin("queue_declare", "declare a queue on", queue=queue, durable=True, arguments=args)

    def purge(self, queue: str) -> int:
        return int(self._admin("queue_purge", "purge a queue on", queue=queue).message_count)

    def delete(self, queue: str) -> None:
        with self.deleting(queue):
            for name in (queue, dead_letter_queue(queue)):
                self._admin("queue_delete", f"delete queue {name} on", queue=name)

    def queue_exists(self, queue: str) -> bool:
        """A passive declare of the queue and of its dead-letter queue. AMQP cannot list queues
        (``list_queues`` raises ``NotSupported``), so ``cleanup`` asks about the names recorded on
        the runs. A missing queue makes the broker close the channel: the link is reopened."""
        for name in (queue, dead_letter_queue(queue)):
            try:
                self._admin("queue_declare", "look for a queue on", queue=name, passive=True)
                return True
            except OperationFailed as exc:
                if "NOT_FOUND" not in str(exc) and "404" not in str(exc):
                    raise
                self.close()  # the broker closed the channel; the next call reconnects
        return False

    def depth(self, queue: str) -> int:
        """Ready plus unacked messages where the management API tells the unacked ones, else
        the ready ones only (AMQP does not report messages delivered and unacked); see
        ``depth_detail``."""
        return int(self.depth_detail(queue)["total"] or 0)

    def depth_detail(self, queue: str) -> dict[str, int | None]:
        """``ready`` and ``consumers`` (AMQP, exact), ``unacked`` from the management API
        (``None`` where it is not enabled or not reachable), and ``total``: ready + unacked,
        or ready alone when unacked is ``None``."""
        ok = self._admin("queue_declare", "measure a queue on", queue=queue, passive=True)
        unacked = self.management.unacked(queue)
        total = ok.message_count + (unacked or 0)
        return {"total": total, "ready": ok.message_count, "unacked": unacked, "consumers": ok.consumer_count}

    def dead_letters(self, queue: str) -> list[bytes]:
        """The bodies in the dead-letter queue, taken off it (``basic_get`` with auto-ack).

        The broker moves a nacked message to the dead-letter queue after the nack, on its own
        time and not in order with other connections: the count is read until it holds still
        for ``DEAD_LETTER_SETTLE_S``."""
        dead = dead_letter_queue(queue)
        return self.take_messages(dead, self._dead_letter_count(dead))

    def _dead_letter_count(self, dead: str) -> int:
        count, deadline = -1, time.monotonic() + RPC_TIMEOUT_S
        while time.monotonic() < deadline:
            now = self._admin("queue_declare", "read the dead letters on", queue=dead, passive=True).message_count
            if now == count:
                break
            count = now
            self.link.wait(lambda: False, DEAD_LETTER_SETTLE_S, "read the dead letters on")
        return count

    def producer(self, queue: str) -> Producer:
        return _Producer(self, queue)

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        return _Consumer(self, queue)

    def cut_connections(self, queue: str) -> int:
        """``rabbitmqctl close_connection`` of the connections named after ``queue``'s workers
        (``rabbitmqctl``: the management API is an optional plugin). Takes a second or two: each
        ``rabbitmqctl`` call starts an Erlang VM."""
        names = {connection_name(self, role, queue) for role in WORKER_ROLES}
        return rabbitmqctl.close_connections(names, "imqueue: cut-connections fault")

    def environment(self) -> dict[str, Any]:
        props = self.link.conn._impl.server_properties if hasattr(self.link.conn, "_impl") else None
        props = props or getattr(self.link.conn, "server_properties", None) or {}
        version = props.get(b"version", props.get("version"))
        return {
            "server": "rabbitmq",
            "server_version": version.decode() if isinstance(version, bytes) else version,
            "url": self.describe_url(),
            "queue_type": self.queue_type,
            "queue_durable": True,
            "delivery_mode": "persistent (2)" if self.persistent else "transient (1)",
            "publisher_confirms": self.confirms,
            "prefetch": self.prefetch,
        }


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dead"


class _Producer(Producer):
    def __init__(self, backend: RabbitMQBackend, queue: str) -> None:
        self.backend, self.queue = backend, queue
        self.link = Link(backend, "producer", queue)
        self.properties = pika.BasicProperties(delivery_mode=2 if backend.persistent else 1)
        self.unconfirmed: deque[int] = deque()  # delivery tags awaiting a confirm, in order
        self.published = 0
        self.nacked = 0
        if backend.confirms != "off":
            self.link.call(
                self.link.channel.confirm_delivery, doing="enable confirms on", ack_nack_callback=self._on_confirm
            )

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            self.nacked += 1 if not method.multiple else sum(1 for t in self.unconfirmed if t <= method.delivery_tag)
        if method.multiple:
            while self.unconfirmed and self.unconfirmed[0] <= method.delivery_tag:
                self.unconfirmed.popleft()
        elif method.delivery_tag in self.unconfirmed:
            self.unconfirmed.remove(method.delivery_tag)
        self.link.wake()

    def send_batch(self, messages: Sequence[bytes]) -> None:
        if self.backend.confirms == "message":
            for body in messages:
                self._publish((body,))
                self._await_confirms()
            return
        self._publish(messages)
        if self.backend.confirms == "batch":
            self._await_confirms()
        else:
            self.link.flush("send to")

    def _publish(self, messages: Sequence[bytes]) -> None:
        self.link.raise_if_failed("send to")
        publish, queue, props = self.link.channel.basic_publish, self.queue, self.properties
        with self.backend.converting("send to"):  # pika raises at once on a channel already closed
            for body in messages:
                publish("", queue, body, props)
        if self.backend.confirms != "off":
            first = self.published + 1
            self.published += len(messages)
            self.unconfirmed.extend(range(first, self.published + 1))

    def _await_confirms(self) -> None:
        if not self.link.wait(lambda: not self.unconfirmed, RPC_TIMEOUT_S, "send to"):
            raise self.backend.unavailable(TimeoutError("no publisher confirm within 30 s"), "send to")
        if self.nacked:
            nacked, self.nacked = self.nacked, 0
            raise OperationFailed(f"{self.backend.name}: the broker refused (nacked) {nacked} message(s)")

    def close(self) -> None:
        """Without confirms, make sure the broker has taken every publish before the connection
        goes: a synchronous method on the channel is answered only after the frames before it.
        (Measured: closing straight after the last publish lost the last ~200 of 200,000
        messages in about one quorum-queue run in five.)"""
        if self.backend.confirms == "off" and not self.link.closed and self.link.error is None:
            self.link.call(self.link.channel.basic_qos, prefetch_count=0, doing="finish sending to")
        self.link.close()


class _Consumer(Consumer):
    def __init__(self, backend: RabbitMQBackend, queue: str) -> None:
        self.backend = backend
        self.link = Link(backend, "consumer", queue)
        self.tags: list[int] = []  # delivered, not yet returned by receive_batch
        self.bodies: list[bytes] = []
        self.unacked: list[int] = []  # returned and not settled, in delivery order
        self.redelivered = 0  # deliveries flagged redelivered (a consumer died or nacked them)
        self.redelivered_logged = 0
        channel = self.link.channel
        self.link.call(channel.basic_qos, doing="set the prefetch on", prefetch_count=backend.prefetch)
        channel.basic_consume(queue, self._on_message, auto_ack=False)

    def _on_message(self, _channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        self.tags.append(method.delivery_tag)
        self.bodies.append(body)
        if method.redelivered:
            self.redelivered += 1
        if self.link._waiting is not None:
            self.link.ioloop.stop()  # the rest of what was read is still dispatched first

    def receive_batch(self, max_messages: int, timeout_s: float) -> Batch:
        if not self.bodies:
            self.link.wait(lambda: bool(self.bodies), timeout_s, "receive from")
        else:
            self.link.raise_if_failed("receive from")
        if self.redelivered > self.redelivered_logged:  # once per batch at most, never per message
            log.info(
                "%s: %d redelivered message(s) received", self.backend.name, self.redelivered - self.redelivered_logged
            )
            self.redelivered_logged = self.redelivered
        tags, bodies = self.tags[:max_messages], self.bodies[:max_messages]
        del self.tags[:max_messages], self.bodies[:max_messages]
        self.unacked.extend(tags)
        return Batch(bodies, tags)

    def ack(self, batch: Batch) -> None:
        self._settle(batch, lambda tag, multiple: self.link.channel.basic_ack(tag, multiple))

    def nack(self, batch: Batch, *, requeue: bool = True) -> None:
        """Nacks are rare (poison, a consumer giving up): written at once rather than with the
        next wait, so a dead letter reaches its queue while the consumer still runs."""
        self._settle(batch, lambda tag, multiple: self.link.channel.basic_nack(tag, multiple, requeue))
        if batch:
            self.link.flush("nack on")
        log_nacked(log, self.backend.name, len(batch), requeue=requeue)

    def _settle(self, batch: Batch, send: Any) -> None:
        """One frame with ``multiple=True`` when the batch is the oldest unacked deliveries,
        else one per tag. Frames are buffered: the next wait (or close) writes them."""
        tags = sorted(batch.receipts or ())
        if not tags:
            return
        self.link.raise_if_failed("ack on")
        with self.backend.converting("ack on"):  # pika raises at once on a channel already closed
            if self.unacked[: len(tags)] == tags:
                send(tags[-1], True)
                del self.unacked[: len(tags)]
                return
            settled = set(tags)
            for tag in tags:
                send(tag, False)
        self.unacked = [t for t in self.unacked if t not in settled]

    def close(self) -> None:
        """Close the connection: the broker requeues what was not acked (acks buffered before
        the close are sent first)."""
        self.link.close()
