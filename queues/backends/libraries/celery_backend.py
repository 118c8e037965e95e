"""``celery-redis`` and ``celery-rabbitmq``: Celery, its worker inside each imqueue consumer.

- Producer: ``task.apply_async((body,))`` (JSON: the body as base64 text), one task per
  message; ``batch_api``: a ``celery.group`` of a send call's tasks, applied once (one
  producer, one connection checkout).
- Consumer: a Celery ``WorkController`` with the ``solo`` pool (``celery worker --pool=solo``:
  the task runs in the worker's own thread; ``--consumers`` is the worker processes), started
  through its API on a thread of the consumer process, as ``celery.contrib.testing`` does;
  without mingle, gossip, heartbeats and remote control (one worker per process, nothing to
  talk to). Celery's defaults otherwise: prefetch multiplier 4. Option ``prompt_hub`` (on by
  default): the loop sends the acks it queued before it polls (``poll_at_once_while_callbacks_wait``);
  kombu 5.7 as shipped can sleep until its next timer with them queued.
- Guarantee: Celery acks a task *before* running it unless ``task_acks_late`` (option
  ``acks_late``, default false as in Celery). A SIGKILLed worker loses the task it was
  running; with ``acks_late`` on RabbitMQ the broker requeues it (at-least-once). On Redis
  every delivered, unacked message (prefetched ones too) waits in kombu's ``unacked`` hash
  until its ``visibility_timeout`` (1 h) passes: for the run it is lost, and ``depth`` (list
  plus that hash) shows it as ``stuck``.
- Dead letters: Celery keeps none (a rejected task is dropped).
- Redis keys: kombu's ``global_keyprefix`` is ``<queue>:``, so the run's list, bindings and
  ``unacked`` hash are its own. RabbitMQ: the queue and the direct exchange named ``<queue>``.
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
from queues.backends.options import Option

try:
    import celery
    from celery.bootsteps import CLOSE
    from celery.exceptions import Reject
    from celery.worker import WorkController
    from kombu.asynchronous import set_event_loop
except ImportError as exc:
    raise missing_library("celery", exc) from exc

TASK = "imq_deliver"
#: How often an idle worker's loop looks whether it was asked to stop.
STOP_CHECK_S = 0.25
ACKS_LATE = Option("acks_late", bool, False, "Celery's task_acks_late: ack a task after it ran, not before")
PROMPT_HUB = Option(
    "prompt_hub",
    bool,
    True,
    "the worker's loop sends the acks it queued before it waits for the broker (false: kombu 5.7 as shipped, "
    "whose loop can wait for its next timer with them queued)",
)
EARLY = LIBRARY.extend(acks=False, redelivers_on_crash=False)
_HUB_LOCK = threading.Lock()


class CeleryBackend(LibraryBackend):
    """What both Celery backends share: the app, its task, the ``acks_late`` option."""

    def transport_options(self, queue: str, role: str) -> dict[str, Any]:
        """kombu's transport options: the connection named ``imq:<namespace>:<role>`` (found by
        an operator, or a test, among the server's clients) and, on Redis, the run's prefix."""
        raise NotImplementedError

    @property
    def acks_late(self) -> bool:
        return bool(self.option_values["acks_late"])

    @property
    def prompt_hub(self) -> bool:
        return bool(self.option_values["prompt_hub"])

    def new_app(self, queue: str, consumer: LibraryConsumer | None = None) -> tuple[celery.Celery, Any]:
        """A Celery app for the run's queue and its task (a consumer's hands each message to
        ``consumer``)."""
        app = celery.Celery("imqueue", broker=self.url, set_as_current=False)
        acks_late = self.acks_late
        app.conf.update(
            task_default_queue=queue,
            task_acks_late=self.acks_late,
            broker_connection_retry_on_startup=False,
            broker_transport_options=self.transport_options(queue, "consumer" if consumer else "producer"),
            worker_hijack_root_logger=False,
            worker_enable_remote_control=False,
            task_ignore_result=True,
        )

        def imq_deliver(text: str) -> None:
            assert consumer is not None, "a producer's task never runs"
            outcome = consumer.deliver(bytes_of(text))
            if outcome == REQUEUE:
                task.apply_async((text,))  # again, at the tail
            elif outcome == DEAD and acks_late:
                raise Reject("set aside by imqueue", requeue=False)
            # an early-acked task has nothing left to reject: rejecting an acked delivery closes
            # the AMQP channel, and what it had not acked yet comes back twice

        task = app.task(name=TASK, shared=False)(imq_deliver)  # never registered in another app
        return app, task

    def library_environment(self) -> dict[str, Any]:
        return {
            "library": "celery",
            "library_version": celery.__version__,
            "acks_late": self.acks_late,
            "prompt_hub": self.prompt_hub,
        }


def _nothing() -> None:
    """A timer's callback whose only effect is that the loop turns."""


def poll_at_once_while_callbacks_wait(hub: Any) -> None:
    """Make ``hub`` poll without waiting while callbacks are queued for its next turn.

    kombu's loop (5.7) runs the queued callbacks, then takes its poll timeout from the timers
    alone. Callbacks queued meanwhile by the loop's own thread wait for that poll to end, and
    Celery queues every ack that way (``call_soon``), as kombu's AMQP reader queues itself after
    each message. Once the worker has taken its whole prefetch and queued the acks, no frame
    comes (the broker waits for those acks) and the loop sleeps until its next timer: measured
    on celery-rabbitmq, 5 runs of 20,000 tasks took 11-125 s (a trickle of four tasks per turn of
    the ``STOP_CHECK_S`` timer while it lasted), and 9.4-10.4 s with this. The poll timeout comes from
    ``fire_timers``, called just before the poll (the loop calls it while a timer is scheduled,
    which ``_on_ready``'s always is)."""
    fire_timers = hub.fire_timers

    def fire_timers_or_poll_now(*args: Any, **kwargs: Any) -> float:
        delay = fire_timers(*args, **kwargs)
        return 0 if hub._ready else delay

    hub.fire_timers = fire_timers_or_poll_now


def _capabilities(backend: Any, late: Any) -> None:
    if backend.acks_late:
        backend.capabilities = late


class _CeleryProducer(LibraryProducer):
    def __init__(self, backend: Any, queue: str) -> None:
        super().__init__(backend, queue)
        self.app, self.task = backend.new_app(queue)

    def enqueue(self, body: bytes) -> None:
        self.task.apply_async((text_of(body),))

    def enqueue_many(self, bodies: list[bytes]) -> None:
        celery.group(self.task.s(text_of(body)) for body in bodies).apply_async()

    def close(self) -> None:
        """After a round trip behind the last publish: without publisher confirms (Celery's
        default) a publish is only written, and closing the pool drops the connection without
        AMQP's close handshake, which could discard what the broker had not read yet. A passive
        declare on the same channel is answered once the publishes before it were routed."""
        with self.backend.converting("send to"):
            if self.backend.name == "celery-rabbitmq":
                with self.app.producer_or_acquire() as producer:
                    producer.channel.queue_declare(queue=self.queue, passive=True)
        self.app.close()


class _CeleryConsumer(LibraryConsumer):
    def __init__(self, backend: Any, queue: str) -> None:
        self.app, _ = backend.new_app(queue, self)
        self.prompt_hub = backend.prompt_hub
        self.worker: Any = None
        self.lock = threading.Lock()
        super().__init__(backend, queue)

    def run_worker(self) -> None:
        # the solo pool runs a task through the thread's current app (``celery worker`` sets it)
        self.app.set_current()
        with _HUB_LOCK:
            # a hub of its own: kombu keeps "the" event loop in a process-wide global, which a
            # second worker of this process (or one forked from a process that ran one) would
            # share, fds of another connection and all
            set_event_loop(None)
            self.worker = self._new_worker()
        if self.worker.hub is not None and self.prompt_hub:
            poll_at_once_while_callbacks_wait(self.worker.hub)
        try:
            self.worker.start()  # returns once its consumer's loop ended (``stop_worker``)
        finally:
            self.worker.stop(in_sighandler=False)  # the warm shutdown, on the worker's own thread

    def _new_worker(self) -> Any:
        return WorkController(
            app=self.app,
            concurrency=1,
            pool="solo",
            hostname=f"imq-{self.queue}-{id(self):x}",
            loglevel="WARNING",
            ready_callback=self._on_ready,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            queues=[self.queue],
        )

    def _on_ready(self, consumer: Any) -> None:
        """On the worker's thread, as its loop starts: a timer that makes an idle loop turn
        every ``STOP_CHECK_S`` (on AMQP it would sleep until the next frame), so that it sees
        ``stop_worker``'s request."""
        hub = getattr(consumer, "hub", None) or getattr(self.worker, "hub", None)
        if hub is not None:
            hub.call_repeatedly(STOP_CHECK_S, _nothing)
        self.started.set()

    def stop_worker(self) -> None:
        """End the consumer's loop at its next turn: what ``celery worker``'s SIGTERM handler
        does through a process-wide flag, for this worker only (another consumer of the same
        process, as in the contract tests, runs on)."""
        consumer = getattr(self.worker, "consumer", None)
        if consumer is not None:
            consumer.blueprint.state = CLOSE  # seen within STOP_CHECK_S (``_on_ready``)

    def after_stop(self) -> None:
        self.app.close()


class CeleryRedisBackend(RedisLibraryBackend, CeleryBackend):
    name = "celery-redis"
    capabilities = EARLY
    options = (ACKS_LATE, PROMPT_HUB, BATCH_API, *LibraryBackend.options)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # late acks on Redis: the message waits out the visibility timeout (1 h) after a crash
        _capabilities(self, LIBRARY.extend(redelivers_on_crash=False))

    def transport_options(self, queue: str, role: str) -> dict[str, Any]:
        return {"global_keyprefix": f"{queue}:", "client_name": f"imq:{self.namespace}:{role}"}

    def _keys(self, queue: str) -> tuple[str, str]:
        return f"{queue}:{queue}", f"{queue}:unacked"

    def declare(self, queue: str) -> None:
        """Nothing to create: kombu makes the list on the first task."""

    def depth(self, queue: str) -> int:
        """The list, plus the messages delivered to a worker and not acked (kombu's hash)."""
        ready, unacked = self._keys(queue)
        with self.converting("measure a queue on"):
            pipe = self.client.pipeline(transaction=False)
            pipe.llen(ready)
            pipe.hlen(unacked)
            return sum(int(n) for n in pipe.execute())

    def purge(self, queue: str) -> int:
        ready, unacked = self._keys(queue)
        with self.converting("purge a queue on"):
            pipe = self.client.pipeline(transaction=True)
            pipe.llen(ready)
            pipe.delete(ready)
            return int(pipe.execute()[0])

    def delete(self, queue: str) -> None:
        with self.deleting(queue):
            unlink_matching(self.client, [f"{glob_escape(queue)}:*", f"_kombu.binding.{glob_escape(queue)}"])

    def list_queues(self, namespace: str) -> list[str]:
        def extract(key: str) -> str | None:
            return key.partition(":")[0]

        with self.converting("list the keys on"):
            return queues_matching(self.client, f"{glob_escape(namespace)}.*:*", namespace, extract)

    def producer(self, queue: str) -> Producer:
        return _CeleryProducer(self, queue)

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        return _CeleryConsumer(self, queue)

    def environment(self) -> dict[str, Any]:
        return {**super().environment(), **self.library_environment(), "batch_api": self.batch_api}


class CeleryRabbitMQBackend(AMQPLibraryBackend, CeleryBackend):
    name = "celery-rabbitmq"
    # py-amqp publishes without publisher confirms (kombu's ``confirm_publish`` is off by default)
    capabilities = EARLY.extend(confirmed_sends=False)
    options = (ACKS_LATE, PROMPT_HUB, BATCH_API, *LibraryBackend.options)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # late acks: the broker requeues a dead worker's messages
        _capabilities(self, LIBRARY.extend(confirmed_sends=False))

    def declare(self, queue: str) -> None:
        """Celery's own declaration of the queue, its exchange and binding (kombu)."""
        with self.converting("declare a queue on"):
            app, _ = self.new_app(queue)
            try:
                with app.connection_for_write() as conn:
                    app.amqp.queues[queue].bind(conn.default_channel).declare()
            finally:
                app.close()

    def transport_options(self, queue: str, role: str) -> dict[str, Any]:
        return {"client_properties": {"connection_name": f"imq:{self.namespace}:{role}"}}

    def broker_queues(self, queue: str) -> list[str]:
        return [queue]

    def delete(self, queue: str) -> None:
        super().delete(queue)
        with self.deleting(queue):
            self._admin("exchange_delete", f"delete exchange {queue} on", exchange=queue)

    def producer(self, queue: str) -> Producer:
        return _CeleryProducer(self, queue)

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        return _CeleryConsumer(self, queue)

    def environment(self) -> dict[str, Any]:
        return {
            "server": "rabbitmq",
            "url": self.describe_url(),
            **self.library_environment(),
            "batch_api": self.batch_api,
        }
