"""``dramatiq-redis`` and ``dramatiq-rabbitmq``: Dramatiq, its ``Worker`` inside each imqueue consumer.

- Producer: ``actor.send(body)`` (JSON: the body as base64 text), one message per imqueue
  message; ``batch_api``: a ``dramatiq.group`` of a send call's messages, ``run()`` once.
- Consumer: a ``dramatiq.Worker`` with one worker thread (``dramatiq --processes N --threads 1``:
  ``--consumers`` is the processes), started and stopped through its API in the consumer
  process. Dramatiq's default middleware, plus ``CurrentMessage`` for dead letters.
- Guarantee: Dramatiq acks a message after its actor returned (acks late). A killed worker's
  messages: RabbitMQ requeues them when its connection closes; on Redis they stay in the dead
  worker's ack set until some worker's maintenance (run on 0.1% of its commands, for workers
  silent for ``heartbeat_timeout``, 60 s) puts them back. The run does that maintenance itself
  once every consumer is gone (``release_dead_consumers``: Dramatiq's own dispatch script,
  with a heartbeat timeout that takes every worker of the run for dead), so both redeliver.
- Dead letters: a message imqueue sets aside is failed (``message.fail()``), which Dramatiq
  moves to its dead-letter queue ``<queue>.XQ`` (kept a week on Redis).
- Redis keys: a namespace of the run's own (``dramatiq:<queue>``), so that everything the run
  left (heartbeats and ack sets too) is found under one prefix. RabbitMQ queues: ``<queue>``,
  ``<queue>.DQ`` (delays), ``<queue>.XQ``.
"""

from __future__ import annotations

import threading
from typing import Any

from queues.backends.base import Consumer, Producer
from queues.backends.libraries.amqp_control import AMQPLibraryBackend
from queues.backends.libraries.base import (
    BATCH_API,
    DEAD,
    LIBRARY,
    REQUEUE,
    LibraryBackend,
    LibraryConsumer,
    LibraryProducer,
    bytes_of,
    missing_library,
    text_of,
)
from queues.backends.libraries.redis_keys import RedisLibraryBackend, glob_escape, queues_matching, unlink_matching

try:
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker
    from dramatiq.middleware import CurrentMessage, default_middleware
except ImportError as exc:
    raise missing_library("dramatiq", exc) from exc

ACTOR = "imq_deliver"
#: How long a Dramatiq worker thread waits for a message before it looks for a stop (1 s by
#: default), and the longest of its idle backoff: only an idle worker waits it out, so a shorter
#: one costs nothing while tasks flow, and a run's consumers stop within it (as huey's
#: ``read_timeout``). The benchmark's minimal script sets the same.
WORKER_TIMEOUT_MS = 250
STOP_TIMEOUT_MS = 5000
DRAMATIQ = LIBRARY  # acks late, redelivered (see the module's docstring)


def middleware() -> list[Any]:
    return [m() for m in default_middleware] + [CurrentMessage()]


def declare_actor(broker: Any, queue: str, consumer: LibraryConsumer | None = None) -> Any:
    """The run's actor on ``broker``: the producer's only names it; a consumer's hands each
    message to ``consumer``."""

    def imq_deliver(text: str) -> None:
        assert consumer is not None, "a producer's actor never runs"
        outcome = consumer.deliver(bytes_of(text))
        if outcome == REQUEUE:
            actor.send(text)  # again, at the tail
        elif outcome == DEAD:
            message = CurrentMessage.get_current_message()
            assert message is not None
            message.fail()  # type: ignore[attr-defined]  # a MessageProxy: the worker nacks it, to the .XQ

    actor = dramatiq.Actor(
        imq_deliver, broker=broker, actor_name=ACTOR, queue_name=queue, priority=0, options={"max_retries": 0}
    )
    return actor


class _DramatiqProducer(LibraryProducer):
    def __init__(self, backend: Any, queue: str) -> None:
        super().__init__(backend, queue)
        self.broker = backend.new_broker(queue, "producer")
        self.actor = declare_actor(self.broker, queue)

    def enqueue(self, body: bytes) -> None:
        self.actor.send(text_of(body))

    def enqueue_many(self, bodies: list[bytes]) -> None:
        dramatiq.group([self.actor.message(text_of(body)) for body in bodies], broker=self.broker).run()

    def close(self) -> None:
        """On RabbitMQ, after a round trip behind the last publish (see ``_CeleryProducer``):
        without confirms a publish is only written, and the broker routes it on its own time."""
        with self.backend.converting("send to"):
            if isinstance(self.backend, DramatiqRabbitMQBackend):
                self.broker.channel.queue_declare(queue=self.queue, passive=True)
        self.broker.close()


class _DramatiqConsumer(LibraryConsumer):
    def __init__(self, backend: Any, queue: str) -> None:
        self.broker = backend.new_broker(queue, "consumer")
        declare_actor(self.broker, queue, self)
        self.stop_requested = threading.Event()
        super().__init__(backend, queue)

    def run_worker(self) -> None:
        worker = dramatiq.Worker(self.broker, queues={self.queue}, worker_threads=1, worker_timeout=WORKER_TIMEOUT_MS)
        worker.start()
        self.started.set()
        try:
            self.stop_requested.wait()
        finally:
            worker.stop(timeout=STOP_TIMEOUT_MS)

    def stop_worker(self) -> None:
        self.stop_requested.set()

    def after_stop(self) -> None:
        self.broker.close()


def _decoded_bodies(encoded: list[Any]) -> list[bytes]:
    return [bytes_of(dramatiq.Message.decode(data).args[0]) for data in encoded]


class DramatiqRedisBackend(RedisLibraryBackend):
    name = "dramatiq-redis"
    capabilities = DRAMATIQ
    options = (BATCH_API, *LibraryBackend.options)

    @staticmethod
    def namespace_of(queue: str) -> str:
        return f"dramatiq:{queue}"

    def new_broker(self, queue: str, role: str, **settings: Any) -> RedisBroker:
        client = self.new_client(role)
        return RedisBroker(client=client, namespace=self.namespace_of(queue), middleware=middleware(), **settings)

    def _control_broker(self, queue: str, **settings: Any) -> RedisBroker:
        return RedisBroker(client=self.client, namespace=self.namespace_of(queue), middleware=[], **settings)

    def declare(self, queue: str) -> None:
        """Nothing to create: Redis makes the keys on the first message."""

    def depth(self, queue: str) -> int:
        """Messages stored and not acked (ready, and held by workers): Dramatiq's ``qsize``."""
        with self.converting("measure a queue on"):
            return int(self._control_broker(queue).do_qsize(queue))

    def purge(self, queue: str) -> int:
        with self.converting("purge a queue on"):
            broker = self._control_broker(queue)
            count = int(broker.do_qsize(queue))
            broker.do_purge(queue)
            broker.do_purge(f"{queue}.DQ")
            return count

    def release_dead_consumers(self, queue: str) -> None:
        """Dramatiq's maintenance, now and certainly (``maintenance_chance`` = all), with a
        heartbeat timeout of 1 ms: every worker of the run is gone, so what any of them held
        goes back to the queue."""
        with self.converting("requeue the messages of dead workers on"):
            self._control_broker(queue, heartbeat_timeout=1, maintenance_chance=MAINTENANCE_SCALE).do_qsize(queue)

    def delete(self, queue: str) -> None:
        with self.deleting(queue):
            unlink_matching(self.client, [f"{glob_escape(self.namespace_of(queue))}:*"])

    def list_queues(self, namespace: str) -> list[str]:
        def extract(key: str) -> str | None:
            return key.split(":", 2)[1] if key.count(":") >= 2 else None

        with self.converting("list the keys on"):
            return queues_matching(self.client, f"dramatiq:{glob_escape(namespace)}.*:*", namespace, extract)

    def dead_letters(self, queue: str) -> list[bytes]:
        with self.converting("read the dead letters on"):
            hash_key = f"{self.namespace_of(queue)}:{queue}.XQ.msgs"
            return _decoded_bodies(list(self.client.hgetall(hash_key).values()))

    def producer(self, queue: str) -> Producer:
        return _DramatiqProducer(self, queue)

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        return _DramatiqConsumer(self, queue)

    def environment(self) -> dict[str, Any]:
        return {
            **super().environment(),
            "library": "dramatiq",
            "library_version": dramatiq.__version__,
            "batch_api": self.batch_api,
        }


class DramatiqRabbitMQBackend(AMQPLibraryBackend):
    name = "dramatiq-rabbitmq"
    # Dramatiq's RabbitmqBroker publishes without publisher confirms (``confirm_delivery`` off)
    capabilities = DRAMATIQ.extend(confirmed_sends=False)
    options = (BATCH_API, *LibraryBackend.options)
    extra_ready = (".DQ",)

    def new_broker(self, queue: str, role: str) -> RabbitmqBroker:
        import pika  # dramatiq-rabbitmq only: a dramatiq-redis run does not pay for importing it

        with self.parsing_url():
            params = pika.URLParameters(self.url)
        params.client_properties = {"connection_name": f"imq:{self.namespace}:{role}"}
        params.connection_attempts = 1
        params.socket_timeout = params.stack_timeout = self.connect_timeout_s
        broker = RabbitmqBroker(parameters=[_as_dict(params)], middleware=middleware())
        return broker

    def declare(self, queue: str) -> None:
        """Dramatiq's own declaration (its queue arguments: the dead-letter routing to ``.XQ``)."""
        with self.converting("declare a queue on"):
            broker = self.new_broker(queue, "control")
            try:
                broker.declare_queue(queue, ensure=True)
            finally:
                broker.close()

    def broker_queues(self, queue: str) -> list[str]:
        return [queue, f"{queue}.DQ", f"{queue}.XQ"]

    def dead_letters(self, queue: str) -> list[bytes]:
        return _decoded_bodies(self.read_dead_letters(f"{queue}.XQ"))

    def producer(self, queue: str) -> Producer:
        return _DramatiqProducer(self, queue)

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        return _DramatiqConsumer(self, queue)

    def environment(self) -> dict[str, Any]:
        return {
            "server": "rabbitmq",
            "url": self.describe_url(),
            "library": "dramatiq",
            "library_version": dramatiq.__version__,
            "batch_api": self.batch_api,
        }


def _as_dict(params: Any) -> dict[str, Any]:
    """pika ``URLParameters`` as the keyword arguments of ``pika.ConnectionParameters`` (what
    ``RabbitmqBroker(parameters=...)`` takes)."""
    keys = (
        "host",
        "port",
        "virtual_host",
        "credentials",
        "heartbeat",
        "client_properties",
        "connection_attempts",
        "socket_timeout",
        "stack_timeout",
        "ssl_options",
    )
    return {key: getattr(params, key) for key in keys}
