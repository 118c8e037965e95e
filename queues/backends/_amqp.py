"""A small synchronous driver over pika's asynchronous ``SelectConnection``.

Why not ``BlockingConnection``: its ``basic_publish`` flushes the socket after every message
(three ``send`` calls each, ~11-18k msgs/s here) and it offers no way to wait for a batch of
publisher confirms. The asynchronous core buffers frames; this driver writes a whole batch of
publishes, then runs the I/O loop once until the batch is on the wire (or confirmed), as an
asynchronous client does. Waits run ``ioloop.start()`` until a condition holds, stopped by the
callback that satisfies it or by a deadline timer, so nothing here can block forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions

from queues.backends import rabbitmqctl
from queues.backends.base import Backend
from queues.errors import BackendUnavailable, QueueError

RPC_TIMEOUT_S = 30.0
HEARTBEAT_S = 10
#: How often a flush looks at the write buffer while the socket is full.
FLUSH_RECHECK_S = 0.0002
#: Beyond ``connect_timeout_s``, how long the opening waits before giving up on pika's own
#: timers (``stack_timeout`` ends the connection first; this only guards against a timer
#: that never fires).
OPEN_MARGIN_S = 0.5


def connection_parameters(url: str, name: str, connect_timeout_s: float) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = connect_timeout_s  # the TCP connect
    params.stack_timeout = connect_timeout_s  # TCP connect, protocol header and AMQP handshake in all
    params.heartbeat = HEARTBEAT_S  # a silent peer is detected within 2 heartbeats
    params.blocked_connection_timeout = RPC_TIMEOUT_S
    params.client_properties = {"connection_name": name}
    return params


def connection_name(backend: Backend, role: str, queue: str | None = None) -> str:
    """``imq:<queue>:<role>`` for a worker's connection to ``queue``, and
    ``imq:<namespace>:<role>:<instance tag>`` for the backend's own: the ``connection_name``
    by which the broker's tools (and ``cut_connections``) find one run's connections."""
    if queue is not None:
        return f"imq:{queue}:{role}"
    return f"imq:{backend.namespace}:{role}:{backend.instance_tag}"


class Link:
    """One connection and one channel, driven synchronously. Not thread-safe."""

    def __init__(self, backend: Backend, role: str, queue: str | None = None) -> None:
        """``queue``: the queue of a worker's connection (it names the connection), ``None``
        for the backend's control connection."""
        self.backend = backend
        self.error: BaseException | None = None
        self.closed = False
        self._waiting: Callable[[], bool] | None = None
        self.opened = False
        self.connect_timeout_s = backend.connect_timeout_s
        with backend.parsing_url():
            params = connection_parameters(backend.url, connection_name(backend, role, queue), self.connect_timeout_s)
        self.conn = pika.SelectConnection(
            params,
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_failure,
            on_close_callback=self._on_failure,
        )
        self.ioloop = self.conn.ioloop
        self._wait_open(lambda: self.opened, "connect to")
        self.channel: Any = None
        self.conn.channel(on_open_callback=self._on_channel)
        self._wait_open(lambda: self.channel is not None, "open a channel on")

    def _wait_open(self, done: Callable[[], bool], doing: str) -> None:
        try:
            if not self.wait(done, self.connect_timeout_s + OPEN_MARGIN_S, doing):
                silent = TimeoutError(f"no answer within {self.connect_timeout_s:g} s")
                raise self.backend.unavailable(silent, doing) from silent
        except BackendUnavailable:
            self.abort()
            raise

    # -- callbacks ---------------------------------------------------------------------------

    def _on_open(self, _conn: Any) -> None:
        self.opened = True
        self.wake()

    def _on_channel(self, channel: Any) -> None:
        channel.add_on_close_callback(self._on_channel_closed)
        self.channel = channel
        self.wake()

    def _on_failure(self, _conn: Any, reason: BaseException | str) -> None:
        # the connection's own callbacks: whatever the reason, the server is out of reach
        if isinstance(reason, pika.exceptions.ConnectionOpenAborted) and not self.opened:
            # pika's stack_timeout aborted the opening: the server took TCP and said nothing
            # (pika's own text is a paragraph about connector states)
            reason = TimeoutError(f"no answer within {self.connect_timeout_s:g} s")
        self.error = reason if isinstance(reason, BaseException) else pika.exceptions.AMQPConnectionError(str(reason))
        self.ioloop.stop()

    def _on_channel_closed(self, _channel: Any, reason: BaseException) -> None:
        if self.error is None:
            self.error = reason
        self.ioloop.stop()

    def wake(self) -> None:
        """Stop the running loop if what it waits for has happened (called from callbacks)."""
        if self._waiting is not None and self._waiting():
            self.ioloop.stop()

    # -- waiting -----------------------------------------------------------------------------

    def wait(self, done: Callable[[], bool], timeout_s: float, doing: str) -> bool:
        """Run the I/O loop until ``done()`` or ``timeout_s``; ``True`` if done. Raises
        ``BackendUnavailable`` if the connection fails, ``OperationFailed`` if the channel does."""
        self.raise_if_failed(doing)
        if done():
            return True
        timer = self.ioloop.call_later(max(0.0, timeout_s), self.ioloop.stop)
        self._waiting = done
        try:
            self.ioloop.start()
        finally:
            self._waiting = None
            self.ioloop.remove_timeout(timer)
        self.raise_if_failed(doing)
        return done()

    def raise_if_failed(self, doing: str) -> None:
        """Raise what a callback recorded, converted by the backend's ``converted`` (pika hands
        errors to callbacks instead of raising them): a channel the broker closed on a live
        connection fails the operation; once the connection is closed, the server is gone."""
        exc = self.error
        if exc is None:
            return
        if self.conn.is_closed:
            raise self.backend.unavailable(exc, doing) from exc
        raise self.backend.converted(exc, doing) from exc

    def call(self, method: Callable[..., Any], *args: Any, doing: str = "talk to", **kwargs: Any) -> Any:
        """A synchronous AMQP method: ``method(..., callback=...)``, waiting for its reply frame."""
        replies: list[Any] = []

        def on_reply(frame: Any) -> None:
            replies.append(frame)
            self.wake()

        # a connection the broker closed since the last wait is BackendUnavailable (the control
        # connection then reconnects), not pika's "channel is closed"
        self.raise_if_failed(doing)
        with self.backend.converting(doing):  # pika raises at once on a channel already closed
            method(*args, callback=on_reply, **kwargs)
        if not self.wait(lambda: bool(replies), RPC_TIMEOUT_S, doing):
            raise self.backend.unavailable(TimeoutError(f"no reply within {RPC_TIMEOUT_S:.0f} s"), doing)
        return replies[0]

    def flush(self, doing: str) -> None:
        """Run the loop until every buffered frame is written to the socket.

        No callback reports a drained buffer, so a short timer re-checks after each turn of the
        loop. ``_get_write_buffer_size`` is the one non-public pika call here;
        ``BlockingConnection`` relies on it the same way (pika 1.x)."""
        pending = self.conn._get_write_buffer_size

        def drained() -> bool:
            if self.error is not None or self.conn.is_closed:
                return True  # nothing more will drain; raise_if_failed below says why
            return pending() == 0

        def recheck() -> None:
            if self._waiting is not drained:
                return  # that wait is over: end this chain of timers
            if drained():
                self.ioloop.stop()
            else:
                self.ioloop.call_later(FLUSH_RECHECK_S, recheck)

        # Not a monotonic condition: a timer (pika's heartbeat) may write a frame after the
        # recheck saw an empty buffer and stopped the loop. Go round until it is empty.
        deadline = time.monotonic() + RPC_TIMEOUT_S
        while not drained():
            self.raise_if_failed(doing)
            if time.monotonic() >= deadline:
                raise self.backend.unavailable(TimeoutError("the socket did not drain"), doing)
            self.ioloop.call_later(0, recheck)
            self.wait(drained, deadline - time.monotonic(), doing)
        self.raise_if_failed(doing)
        if self.conn.is_closed:
            raise self.backend.unavailable(ConnectionError("the connection is closed"), doing)

    def close(self) -> None:
        """Send what is buffered, close the connection (waiting briefly for the broker) and
        release the loop's file descriptors. Idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.error is None and self.conn.is_open:
                self.conn.close()
                self.wait(lambda: self.conn.is_closed, self.connect_timeout_s, "close")
        except QueueError:
            pass  # the close callback records ConnectionClosedByClient; nothing to report
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the connection without waiting (after a failure) and release the loop."""
        self.closed = True
        try:
            if not (self.conn.is_closed or self.conn.is_closing):
                self.conn.close()
        except pika.exceptions.AMQPError:
            pass
        self.ioloop.close()


class ControlLink(Backend):
    """The control connection of a backend on RabbitMQ (the raw backend and the task libraries'):
    one ``Link`` named for the backend, opened on first use, and its cut by the broker."""

    _link: Link | None = None

    def _fresh_state(self) -> dict[str, Any]:
        return {"_link": None}

    def connect(self) -> None:
        if self._link is None:
            self._link = Link(self, "control")

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

    @property
    def link(self) -> Link:
        self.connect()
        assert self._link is not None
        return self._link

    def take_messages(self, queue: str, count: int) -> list[bytes]:
        """``count`` bodies taken off ``queue`` on the control connection (``basic_get`` with
        auto-ack: AMQP can only read a queue by taking from it)."""
        link, got = self.link, []

        def on_message(_channel: Any, _method: Any, _properties: Any, body: bytes) -> None:
            got.append(body)
            link.wake()

        for _ in range(count):
            wanted = len(got) + 1
            link.channel.basic_get(queue, on_message, auto_ack=True)
            link.wait(lambda: len(got) >= wanted, RPC_TIMEOUT_S, "read the dead letters on")  # noqa: B023 - used at once
        return got

    def cut_control_connection(self) -> int:
        return rabbitmqctl.close_connections({connection_name(self, "control")}, "imqueue: control connection cut")
