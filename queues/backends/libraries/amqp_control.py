"""The runner's control connection for the task libraries on RabbitMQ: depth, purge, delete and
dead letters of the queues a library declared, on the lab's own AMQP driver (``_amqp.Link``).

The library's producers and workers use their own connections (pika or py-amqp); the control
connection is the lab's, so an unreachable broker is reported in the one format of every
backend, within ``connect_timeout_s``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pika.exceptions

from queues.backends._amqp import ControlLink, Link
from queues.backends.libraries.base import LibraryBackend
from queues.errors import OperationFailed


class AMQPLibraryBackend(ControlLink, LibraryBackend):
    """A task library on RabbitMQ. Subclasses list the broker queues of a run's queue."""

    url_setting = "IMQ_AMQP_URL"
    default_url = "amqp://guest:guest@127.0.0.1:5672/%2F"
    url_schemes = ("amqp", "amqps")
    unavailable_errors = (pika.exceptions.AMQPConnectionError, OSError)
    failed_errors = (pika.exceptions.AMQPError,)
    # the broker requeues a closed connection's unacked messages as soon as it notices the close
    release_after_s = 1.0
    #: What ``depth`` and ``purge`` count beside the queue itself (a delay queue).
    extra_ready: ClassVar[tuple[str, ...]] = ()

    def probe(self, role: str) -> None:
        Link(self, role).close()

    def _admin(self, method: str, doing: str, **kwargs: Any) -> Any:
        link = self.link
        return link.call(getattr(link.channel, method), doing=doing, **kwargs).method

    def broker_queues(self, queue: str) -> list[str]:
        """Every broker queue the library declares for ``queue`` (dead letters included)."""
        raise NotImplementedError

    def dead_letter_queue(self, queue: str) -> str:
        raise NotImplementedError

    def _ready(self, name: str) -> int:
        """Ready messages of ``name``; 0 for a queue the library has not declared yet."""
        try:
            return int(self._admin("queue_declare", "measure a queue on", queue=name, passive=True).message_count)
        except OperationFailed as exc:
            if "NOT_FOUND" not in str(exc) and "404" not in str(exc):
                raise
            self.close()  # the broker closed the channel; the next call reconnects
            return 0

    def declare(self, queue: str) -> None:
        """Nothing to create: the library declares its queues (with its own arguments) itself."""

    def depth(self, queue: str) -> int:
        """Ready messages only: AMQP does not count delivered, unacked ones."""
        return sum(self._ready(name) for name in (queue, *(queue + s for s in self.extra_ready)))

    def purge(self, queue: str) -> int:
        removed = 0
        for name in (queue, *(queue + s for s in self.extra_ready)):
            if self._ready(name) or self.queue_exists_one(name):
                removed += int(self._admin("queue_purge", "purge a queue on", queue=name).message_count)
        return removed

    def delete(self, queue: str) -> None:
        with self.deleting(queue):
            for name in self.broker_queues(queue):
                self._admin("queue_delete", f"delete queue {name} on", queue=name)

    def queue_exists_one(self, name: str) -> bool:
        try:
            self._admin("queue_declare", "look for a queue on", queue=name, passive=True)
            return True
        except OperationFailed as exc:
            if "NOT_FOUND" not in str(exc) and "404" not in str(exc):
                raise
            self.close()
            return False

    def queue_exists(self, queue: str) -> bool:
        return any(self.queue_exists_one(name) for name in self.broker_queues(queue))

    def read_dead_letters(self, dead: str) -> list[Any]:
        """The bodies in ``dead``, taken off it (``basic_get`` with auto-ack)."""
        return self.take_messages(dead, self._ready(dead))
