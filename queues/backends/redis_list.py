"""Redis lists: ``redis-list`` (the reliable-queue pattern, at-least-once) and
``redis-list-noack`` (plain ``LPOP``, at-most-once) measured beside it.

Keys of queue ``q``: ``{q}:ready`` (the list; producers ``RPUSH``, consumers take from the left),
``{q}:proc:<consumer>`` (a consumer's processing list), ``{q}:hb:<consumer>`` (its heartbeat,
a key with a TTL), ``{q}:consumers`` (the set of registered consumers), ``{q}:dead`` (dead
letters).

- Send: one ``RPUSH`` of up to 1000 values per command, the commands of a batch written in one
  ``sendall``. Fixed-size bodies (``PackedMessages``) are laid out in the Redis protocol by one
  numpy copy instead of redis-py packing them argument by argument (most of the producer's CPU).
- Receive (``redis-list``): a Lua script moves up to n messages from the ready list to the
  consumer's processing list and refreshes its heartbeat in one round trip (``LMOVE`` moves one
  message per command). When the queue is empty, ``BLMOVE`` waits for the first message and the
  same script, pipelined behind it, takes the rest. With ``prefetch`` (default true) the take of
  the next batch is sent as soon as a batch is handed out and read by the next call, so the
  server moves it while the worker counts the current one (a consumer then holds up to two
  batches; both are in its processing list, so nothing changes for a crash).
- Ack: the consumer mirrors its processing list, so an ack of its oldest batch is an ``LTRIM``
  of the list's head. That trim is deferred: ``ack`` only counts the messages (after the runner
  has counted them, as always) and the trim rides on the consumer's next take script (or
  settle, or close), so a batch costs one round trip, not two. A consumer killed in between
  leaves acked messages in its list: they are delivered again (duplicates, never losses), and
  until the next call ``depth`` still counts them as in flight (option ``defer_acks=false``:
  one round trip per ack instead). Acks of other subsets, requeues and dead letters go by
  position, at once.
- Reaper: every consumer runs it every ``reap_interval_s`` (default 0.5 s); it returns the
  processing lists of consumers whose heartbeat (TTL ``heartbeat_s``, default 2 s) expired to
  the head of the queue. A consumer stalled longer than the TTL is presumed dead: its messages
  are delivered again (duplicates, never losses).
- ``ack=false`` (or the alias ``redis-list-noack``): ``LPOP`` with no processing list; a killed
  consumer loses what it held, and the capabilities say so.
- A lost connection fails the run (no automatic reconnect: see ``_redis``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import redis

from queues.backends._redis import RedisBase, RedisConsumer, as_bytes_list, key_prefix, send_packed
from queues.backends.base import Batch, Capabilities, Consumer, Producer, log_nacked
from queues.backends.options import Option
from queues.workload.events import PackedMessages

log = logging.getLogger(__name__)

#: Values per RPUSH command: large enough to amortise the command, small enough for the server.
PUSH_CHUNK = 1000
RELIABLE = Capabilities(durable=False, native_batch=True, push=True)
AT_MOST_ONCE = RELIABLE.extend(acks=False, redelivers_on_crash=False)


class _Keys:
    def __init__(self, queue: str) -> None:
        self.prefix = key_prefix(queue)
        self.ready = self.prefix + "ready"
        self.consumers = self.prefix + "consumers"
        self.dead = self.prefix + "dead"

    def proc(self, consumer_id: str) -> str:
        return f"{self.prefix}proc:{consumer_id}"

    def heartbeat(self, consumer_id: str) -> str:
        return f"{self.prefix}hb:{consumer_id}"


class RedisListBackend(RedisBase):
    """Options: ``ack`` (default true), ``heartbeat_s`` (2), ``reap_interval_s`` (0.5),
    ``defer_acks`` (true: an ack's trim rides on the consumer's next call; false: one round
    trip per ack, and ``depth`` drops at once), ``prefetch`` (true: send the next take before
    the worker asks for it).

    ``durable`` is declared False because the servers this lab targets run without
    persistence; ``environment()`` records the server's actual appendonly/save settings."""

    name = "redis-list"
    capabilities = RELIABLE
    scripts = ("list_take", "list_settle", "list_reap", "list_depth")
    options: ClassVar[tuple[Option, ...]] = (
        Option("ack", bool, True, "true: the reliable queue (at-least-once); false: plain LPOP (at-most-once)"),
        Option(
            "heartbeat_s",
            float,
            2.0,
            "a consumer silent this long is presumed dead and its messages requeued",
            minimum=0.1,
            maximum=3600,
            unit="s",
        ),
        Option(
            "reap_interval_s",
            float,
            0.5,
            "how often each consumer returns dead consumers' messages (0: on every call)",
            minimum=0,
            maximum=3600,
            unit="s",
        ),
        Option("defer_acks", bool, True, "send an ack with the consumer's next take instead of on its own"),
        Option("prefetch", bool, True, "ask for the next batch before the worker needs it"),
        *RedisBase.options,
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.acks = bool(self.option_values["ack"])
        self.heartbeat_s = float(self.option_values["heartbeat_s"])
        self.reap_interval_s = float(self.option_values["reap_interval_s"])
        self.defer_acks = bool(self.option_values["defer_acks"])
        self.prefetch = bool(self.option_values["prefetch"])
        # a dead consumer's list goes back once its heartbeat expired, at the next reap
        self.release_after_s = self.heartbeat_s + self.reap_interval_s
        if self.acks != type(self).capabilities.acks:  # the guarantees follow the option, per instance
            self.capabilities = RELIABLE if self.acks else AT_MOST_ONCE

    def declare(self, queue: str) -> None:
        """Nothing to create: Redis makes a list on the first push."""

    def purge(self, queue: str) -> int:
        keys = _Keys(queue)
        with self.converting("purge a queue on"):
            return int(self.script("list_depth")(keys=[keys.ready, keys.consumers], args=[keys.prefix, "purge"]))

    def delete(self, queue: str) -> None:
        self.delete_keys(queue)

    def depth(self, queue: str) -> int:
        """Exact: the ready list plus every registered consumer's processing list."""
        keys = _Keys(queue)
        with self.converting("measure a queue on"):
            return int(self.script("list_depth")(keys=[keys.ready, keys.consumers], args=[keys.prefix, "count"]))

    def dead_letters(self, queue: str) -> list[bytes]:
        """The messages set aside with ``nack(requeue=False)``, oldest first."""
        with self.converting("read the dead letters on"):
            return as_bytes_list(self.client.lrange(_Keys(queue).dead, 0, -1))

    def producer(self, queue: str) -> Producer:
        return _ListProducer(self, queue)

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        if self.acks:
            return _ReliableConsumer(self, queue)
        return _PopConsumer(self, queue)

    def environment(self) -> dict[str, Any]:
        return {
            **super().environment(),
            "acks": self.acks,
            "heartbeat_s": self.heartbeat_s,
            "defer_acks": self.defer_acks and self.acks,
            "prefetch": self.prefetch and self.acks,
        }


class RedisListNoAckBackend(RedisListBackend):
    """``redis-list`` with ``ack=false``: plain ``LPOP``, at-most-once, declared as such."""

    name = "redis-list-noack"
    capabilities = AT_MOST_ONCE
    options = tuple(o.with_default(False) if o.name == "ack" else o for o in RedisListBackend.options)


def push(client: Any, key: str, messages: Sequence[bytes], *, left: bool = False) -> None:
    """``RPUSH`` (or ``LPUSH``) ``messages`` in commands of ``PUSH_CHUNK`` values, pipelined."""
    if not messages:
        return
    command = client.lpush if left else client.rpush
    if len(messages) <= PUSH_CHUNK:
        command(key, *messages)
        return
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(messages), PUSH_CHUNK):
        chunk = messages[start : start + PUSH_CHUNK]
        (pipe.lpush if left else pipe.rpush)(key, *chunk)
    pipe.execute()


def pack_push(connection: Any, key: bytes, messages: Sequence[bytes]) -> tuple[bytes, int]:
    """``messages`` as ``RPUSH`` commands of up to ``PUSH_CHUNK`` values in the Redis protocol,
    and how many commands that is. ``PackedMessages`` are laid out by numpy (the bodies of one
    batch have one size but the last); anything else goes through redis-py's packer."""
    if not isinstance(messages, PackedMessages):
        packed = []
        for start in range(0, len(messages), PUSH_CHUNK):
            packed.extend(connection.pack_command("RPUSH", key, *messages[start : start + PUSH_CHUNK]))
        return b"".join(packed), len(range(0, len(messages), PUSH_CHUNK))
    size, buffer, count = messages.size, messages.buffer, len(messages)
    full = len(buffer) // size
    prefix = b"$%d\r\n" % size
    # one row per message: $<size>\r\n<body>\r\n
    rows = np.empty((full, len(prefix) + size + 2), dtype=np.uint8)
    rows[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    rows[:, len(prefix) : -2] = np.frombuffer(buffer, dtype=np.uint8, count=full * size).reshape(full, size)
    rows[:, -2:] = np.frombuffer(b"\r\n", dtype=np.uint8)
    rest = bytes(buffer[full * size :])
    parts: list[Any] = []
    for start in range(0, count, PUSH_CHUNK):
        stop = min(start + PUSH_CHUNK, count)
        parts.append(b"*%d\r\n$5\r\nRPUSH\r\n$%d\r\n%s\r\n" % (stop - start + 2, len(key), key))
        parts.append(rows[start : min(stop, full)])
        if stop > full:  # the shorter last message
            parts.append(b"$%d\r\n%s\r\n" % (len(rest), rest))
    return b"".join(parts), len(range(0, count, PUSH_CHUNK))


class _ListProducer(Producer):
    """Writes pre-packed ``RPUSH`` commands on a connection of its client's pool (checked out
    per batch, so that redis-py replaces a connection that died between batches)."""

    def __init__(self, backend: RedisListBackend, queue: str) -> None:
        self.backend, self.key = backend, _Keys(queue).ready.encode()
        self.client = backend.new_client("producer", queue)

    def send_batch(self, messages: Sequence[bytes]) -> None:
        if not messages:
            return
        pool = self.client.connection_pool
        with self.backend.converting("send to"):
            connection = pool.get_connection()
            try:
                payload, commands = pack_push(connection, self.key, messages)
                send_packed(connection, payload, commands)
            finally:
                pool.release(connection)

    def close(self) -> None:
        self.client.close()


class _PopConsumer(Consumer):
    """At-most-once: ``LPOP key n``; what a killed consumer held is gone."""

    def __init__(self, backend: RedisListBackend, queue: str) -> None:
        self.backend, self.keys = backend, _Keys(queue)
        self.client = backend.new_client("consumer", queue)

    def receive_batch(self, max_messages: int, timeout_s: float) -> Batch:
        with self.backend.converting("receive from"):
            items = as_bytes_list(self.client.lpop(self.keys.ready, max_messages) or [])
            if not items:
                items = self._wait(max_messages, timeout_s)
        return Batch(items)

    def _wait(self, max_messages: int, timeout_s: float) -> list[bytes]:
        pipe = self.client.pipeline(transaction=False)
        pipe.blpop([self.keys.ready], timeout=max(timeout_s, 0.01))  # 0 would block forever
        if max_messages > 1:
            pipe.lpop(self.keys.ready, max_messages - 1)
        first, *rest = pipe.execute()
        more = (rest[0] if rest else None) or []
        # a push may land between a timed-out BLPOP and the LPOP: keep what LPOP took
        return [first[1], *more] if first else more

    def ack(self, batch: Batch) -> None:
        """Nothing to do: ``LPOP`` already removed the messages."""

    def nack(self, batch: Batch, *, requeue: bool = True) -> None:
        with self.backend.converting("nack on"):
            if requeue:
                push(self.client, self.keys.ready, list(reversed(batch.bodies)), left=True)
            else:
                push(self.client, self.keys.dead, list(batch.bodies))
        log_nacked(log, self.backend.name, len(batch), requeue=requeue)

    def close(self) -> None:
        self.client.close()


class _ReliableConsumer(RedisConsumer):
    """Takes into its own processing list; mirrors that list to ack by position.

    The mirror is, in the list's order: ``acked`` messages (done, their trim not yet sent), the
    tokens of the ``outstanding`` ones (handed out, not acked) and the messages taken ``ahead``
    (not handed out yet). With ``prefetch``, the take of the next batch is sent as soon as a
    batch is handed out and its reply read by the next ``receive_batch``: the server moves the
    next batch while the worker counts this one. Every other command first reads that reply
    (one command in flight at a time, so the mirror stays exact)."""

    backend: RedisListBackend

    def __init__(self, backend: RedisListBackend, queue: str) -> None:
        self.backend, self.keys = backend, _Keys(queue)
        self.id = uuid.uuid4().hex[:12]
        self.proc, self.hb = self.keys.proc(self.id), self.keys.heartbeat(self.id)
        self.client = backend.new_client("consumer", queue)
        self.scripts = backend.register_scripts(self.client)
        self.take_keys = [self.keys.ready, self.proc, self.hb, self.keys.consumers]
        self.ttl_ms = max(100, int(backend.heartbeat_s * 1000))
        self.outstanding: list[int] = []  # tokens of the processing list's un-acked messages, in order
        self.acked = 0  # messages at the head of the processing list acked but not yet trimmed
        self.ahead: list[bytes] = []  # taken into the processing list, not handed out yet
        self.in_flight: tuple[Any, list[Any]] | None = None  # (connection, args) of a prefetch
        self.next_token = 0
        self.next_reap = 0.0
        with backend.converting("register a consumer on"):
            self._take(0)  # registers the consumer and starts its heartbeat

    def _take_args(self, n: int) -> list[Any]:
        """The take script's arguments; the deferred acks go with it."""
        args = [n, self.ttl_ms, self.id, self.acked, self.acked + len(self.outstanding) + len(self.ahead)]
        self.acked = 0
        return args

    def _took(self, reply: list[Any]) -> None:
        status, items = reply
        if status == -1:
            # reaped while we were busy: every message we held went back to the queue
            self._presumed_dead()
        if items:
            self.ahead = items if not self.ahead else [*self.ahead, *items]

    def _presumed_dead(self) -> None:
        log.warning(
            "%s: consumer %s was presumed dead (no heartbeat for %.1f s); what it held went back to the queue",
            self.backend.name,
            self.id,
            self.backend.heartbeat_s,
        )
        self._forget()

    def _forget(self) -> None:
        self.outstanding.clear()
        self.ahead = []
        self.acked = 0

    def _take(self, n: int) -> None:
        """Trim the deferred acks, then take up to ``n`` messages into ``ahead``."""
        self._took(self.scripts["list_take"](keys=self.take_keys, args=self._take_args(n)))

    def _send_take(self, n: int) -> None:
        """Send a take without waiting for its reply (read by ``_finish``)."""
        connection = self.client.connection_pool.get_connection()
        args = self._take_args(n)
        try:
            connection.send_command(
                "EVALSHA", self.scripts["list_take"].sha, len(self.take_keys), *self.take_keys, *args
            )
        except BaseException:
            self.client.connection_pool.release(connection)
            raise
        self.in_flight = (connection, args)

    def _finish(self) -> None:
        """Read the reply of the take in flight, if any."""
        if self.in_flight is None:
            return
        (connection, args), self.in_flight = self.in_flight, None
        try:
            reply = connection.read_response()
        except redis.exceptions.NoScriptError:
            reply = None  # the script cache was flushed: it did not run, run it again (loads it)
        except BaseException:
            connection.disconnect()
            raise
        finally:
            self.client.connection_pool.release(connection)
        if reply is None:
            reply = self.scripts["list_take"](keys=self.take_keys, args=args)
        self._took(reply)

    def receive_batch(self, max_messages: int, timeout_s: float) -> Batch:
        with self.backend.converting("receive from"):
            self._finish()
            self._reap_if_due()
            if not self.ahead:
                self._take(max_messages)
            if not self.ahead:
                self._wait(max_messages, timeout_s)
            if len(self.ahead) <= max_messages:
                items, self.ahead = self.ahead, []
            else:
                items, self.ahead = self.ahead[:max_messages], self.ahead[max_messages:]
            tokens = list(range(self.next_token, self.next_token + len(items)))
            self.next_token += len(items)
            self.outstanding.extend(tokens)
            if items and self.backend.prefetch and not self.ahead:
                self._send_take(max_messages)
        return Batch(items, tokens)

    def _wait(self, max_messages: int, timeout_s: float) -> None:
        # block no longer than a third of the heartbeat TTL, or the reaper takes us for dead;
        # the take behind BLMOVE skips the length check (the list grew by what BLMOVE moved)
        block_s = min(max(timeout_s, 0.01), self.backend.heartbeat_s / 3)
        pipe = self.client.pipeline(transaction=False)
        # BLMOVE takes fractional seconds (Redis 6+); redis-py annotates the timeout as int
        pipe.blmove(self.keys.ready, self.proc, block_s, "LEFT", "RIGHT")  # type: ignore[arg-type]
        self.scripts["list_take"](
            keys=self.take_keys, args=[max_messages - 1, self.ttl_ms, self.id, 0, -1], client=pipe
        )
        first, (_, rest) = pipe.execute()
        self.ahead = [first, *rest] if first is not None else list(rest)

    def _reap_if_due(self) -> None:
        now = time.monotonic()
        if now >= self.next_reap:
            self.next_reap = now + self.backend.reap_interval_s
            reaped = self.scripts["list_reap"](keys=[self.keys.ready, self.keys.consumers], args=[self.keys.prefix, ""])
            if reaped:
                log.warning(
                    "%s: reaped %d message(s) of consumers with no heartbeat for %.1f s back to the queue",
                    self.backend.name,
                    reaped,
                    self.backend.heartbeat_s,
                )

    def ack(self, batch: Batch) -> None:
        self._settle(batch, "ack")

    def nack(self, batch: Batch, *, requeue: bool = True) -> None:
        self._settle(batch, "requeue" if requeue else "dead")

    def _settle(self, batch: Batch, mode: str) -> None:
        tokens = sorted(batch.receipts or ())
        if not tokens:
            return
        if mode == "ack" and self.outstanding[: len(tokens)] == tokens:
            # the oldest messages: trimmed by the next take (or settle, or close)
            del self.outstanding[: len(tokens)]
            self.acked += len(tokens)
            if self.backend.defer_acks:
                return
            self.flush_acks()
            return
        with self.backend.converting("ack on"):
            self._finish()  # may find that we were reaped (and forget what we held)
        position = {token: i for i, token in enumerate(self.outstanding)}
        positions = [position[t] for t in tokens if t in position]
        if not positions:
            return  # reaped since they were received: they went back to the queue already
        args: list[Any] = [mode, self._expected(), self.acked, *positions]
        settled = set(tokens)
        self.outstanding = [t for t in self.outstanding if t not in settled]
        self.acked = 0
        with self.backend.converting("ack on"):
            if self.scripts["list_settle"](keys=self._settle_keys(), args=args) == -1:
                # reaped while we were busy: every message we held went back to the queue
                self._presumed_dead()
                return
        if mode != "ack":
            log_nacked(log, self.backend.name, len(positions), requeue=mode == "requeue")

    def flush_acks(self) -> None:
        """Trim the deferred acks now (the next take, settle or close would)."""
        if not self.acked:
            return
        with self.backend.converting("ack on"):
            self._finish()
            if not self.acked:
                return
            args = ["ack", self._expected(), self.acked]
            self.acked = 0
            if self.scripts["list_settle"](keys=self._settle_keys(), args=args) == -1:
                self._presumed_dead()

    def _expected(self) -> int:
        """The length of the processing list the mirror expects, before the deferred trim."""
        return self.acked + len(self.outstanding) + len(self.ahead)

    def _settle_keys(self) -> list[str]:
        return [self.proc, self.keys.ready, self.keys.dead]

    def release(self) -> None:
        """Send the deferred acks, then return the processing list to the head of the queue and
        unregister (one round trip)."""
        self._finish()  # what it took is in the processing list: given back below
        pipe = self.client.pipeline(transaction=False)
        if self.acked:
            args = ["ack", self._expected(), self.acked]
            self.scripts["list_settle"](keys=self._settle_keys(), args=args, client=pipe)
        self.scripts["list_reap"](
            keys=[self.keys.ready, self.keys.consumers], args=[self.keys.prefix, self.id], client=pipe
        )
        self._forget()
        returned = pipe.execute()[-1]
        if returned:
            log.info("%s: a closing consumer put %d unacked message(s) back in the queue", self.backend.name, returned)
