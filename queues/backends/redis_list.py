"""Redis lists: ``redis-list`` (the reliable-queue pattern, at-least-once) and
``redis-list-noack`` (plain ``LPOP``, at-most-once) measured beside it.

Keys of queue ``q``: ``{q}:ready`` (the list; producers ``RPUSH``, consumers take from the left),
``{q}:proc:<consumer>`` (a consumer's processing list), ``{q}:hb:<consumer>`` (its heartbeat,
a key with a TTL), ``{q}:consumers`` (the set of registered consumers), ``{q}:dead`` (dead
letters).

- Send: one ``RPUSH`` of up to 1000 values per command, the commands of a batch pipelined.
- Receive (``redis-list``): a Lua script moves up to n messages from the ready list to the
  consumer's processing list and refreshes its heartbeat in one round trip (``LMOVE`` moves one
  message per command). When the queue is empty, ``BLMOVE`` waits for the first message and the
  same script, pipelined behind it, takes the rest.
- Ack: the consumer mirrors its processing list, so an ack of its oldest batch is one
  ``LTRIM``; acks of other subsets, requeues and dead letters go by position.
- Reaper: every consumer runs it every ``reap_interval_s`` (default 0.5 s); it returns the
  processing lists of consumers whose heartbeat (TTL ``heartbeat_s``, default 2 s) expired to
  the head of the queue. A consumer stalled longer than the TTL is presumed dead: its messages
  are delivered again (duplicates, never losses).
- ``ack=false`` (or the alias ``redis-list-noack``): ``LPOP`` with no processing list; a killed
  consumer loses what it held, and the capabilities say so.
- A lost connection fails the run (no automatic reconnect: see ``_redis``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from queues.backends._redis import RedisBase, RedisConsumer, key_prefix, wrap_errors
from queues.backends.base import Batch, Capabilities, Consumer, Producer
from queues.events import PackedMessages

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
    """Options: ``ack`` (default true), ``heartbeat_s`` (2), ``reap_interval_s`` (0.5).

    ``durable`` is declared False because the servers this lab targets run without
    persistence; ``environment()`` records the server's actual appendonly/save settings."""

    name = "redis-list"
    capabilities = RELIABLE
    scripts = ("list_take", "list_settle", "list_reap", "list_depth")
    ack_default = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.acks = self.option("ack", self.ack_default, bool)
        self.heartbeat_s = self.option("heartbeat_s", 2.0, float)
        self.reap_interval_s = self.option("reap_interval_s", 0.5, float)
        if self.acks != self.ack_default:  # the guarantees follow the option, per instance
            self.capabilities = RELIABLE if self.acks else AT_MOST_ONCE

    def declare(self, queue: str) -> None:
        """Nothing to create: Redis makes a list on the first push."""

    def purge(self, queue: str) -> int:
        keys = _Keys(queue)
        with wrap_errors(self, "purge a queue on"):
            return int(self.script("list_depth")(keys=[keys.ready, keys.consumers], args=[keys.prefix, "purge"]))

    def delete(self, queue: str) -> None:
        self.delete_keys(queue)

    def depth(self, queue: str) -> int:
        """Exact: the ready list plus every registered consumer's processing list."""
        keys = _Keys(queue)
        with wrap_errors(self, "measure a queue on"):
            return int(self.script("list_depth")(keys=[keys.ready, keys.consumers], args=[keys.prefix, "count"]))

    def dead_letters(self, queue: str) -> list[bytes]:
        """The messages set aside with ``nack(requeue=False)``, oldest first."""
        with wrap_errors(self, "read the dead letters on"):
            return self.client.lrange(_Keys(queue).dead, 0, -1)

    def producer(self, queue: str) -> Producer:
        return _ListProducer(self, queue)

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        if self.acks:
            return _ReliableConsumer(self, queue)
        return _PopConsumer(self, queue)

    def environment(self) -> dict[str, Any]:
        return {**super().environment(), "acks": self.acks, "heartbeat_s": self.heartbeat_s}


class RedisListNoAckBackend(RedisListBackend):
    """``redis-list`` with ``ack=false``: plain ``LPOP``, at-most-once, declared as such."""

    name = "redis-list-noack"
    capabilities = AT_MOST_ONCE
    ack_default = False


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


class _ListProducer(Producer):
    def __init__(self, backend: RedisListBackend, queue: str) -> None:
        self.backend, self.key = backend, _Keys(queue).ready
        self.client = backend.new_client("producer")

    def send_batch(self, messages: Sequence[bytes]) -> None:
        if isinstance(messages, PackedMessages):
            messages = list(messages)  # redis-py packs a list of bytes without copying them
        with wrap_errors(self.backend, "send to"):
            push(self.client, self.key, messages)

    def close(self) -> None:
        self.client.close()


class _PopConsumer(Consumer):
    """At-most-once: ``LPOP key n``; what a killed consumer held is gone."""

    def __init__(self, backend: RedisListBackend, queue: str) -> None:
        self.backend, self.keys = backend, _Keys(queue)
        self.client = backend.new_client("consumer")

    def receive_batch(self, max_messages: int, timeout_s: float) -> Batch:
        with wrap_errors(self.backend, "receive from"):
            items = self.client.lpop(self.keys.ready, max_messages)
            if not items:
                items = self._wait(max_messages, timeout_s)
        return Batch(items or [])

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
        with wrap_errors(self.backend, "nack on"):
            if requeue:
                push(self.client, self.keys.ready, list(reversed(batch.bodies)), left=True)
            else:
                push(self.client, self.keys.dead, list(batch.bodies))

    def close(self) -> None:
        self.client.close()


class _ReliableConsumer(RedisConsumer):
    """Takes into its own processing list; mirrors that list to ack by position."""

    def __init__(self, backend: RedisListBackend, queue: str) -> None:
        self.backend, self.keys = backend, _Keys(queue)
        self.id = uuid.uuid4().hex[:12]
        self.proc, self.hb = self.keys.proc(self.id), self.keys.heartbeat(self.id)
        self.client = backend.new_client("consumer")
        self.scripts = backend.register_scripts(self.client)
        self.ttl_ms = max(100, int(backend.heartbeat_s * 1000))
        self.outstanding: list[int] = []  # tokens of the processing list's messages, in order
        self.next_token = 0
        self.next_reap = 0.0
        with wrap_errors(backend, "register a consumer on"):
            self._take(0)  # registers the consumer and starts its heartbeat

    def _take(self, n: int, pipe: Any = None) -> Any:
        keys = [self.keys.ready, self.proc, self.hb, self.keys.consumers]
        return self.scripts["list_take"](keys=keys, args=[n, self.ttl_ms, self.id], client=pipe or self.client)

    def receive_batch(self, max_messages: int, timeout_s: float) -> Batch:
        with wrap_errors(self.backend, "receive from"):
            self._reap_if_due()
            items = self._take(max_messages)
            if not items:
                items = self._wait(max_messages, timeout_s)
        tokens = list(range(self.next_token, self.next_token + len(items)))
        self.next_token += len(items)
        self.outstanding.extend(tokens)
        return Batch(items, tokens)

    def _wait(self, max_messages: int, timeout_s: float) -> list[bytes]:
        # block no longer than a third of the heartbeat TTL, or the reaper takes us for dead
        block_s = min(max(timeout_s, 0.01), self.backend.heartbeat_s / 3)
        pipe = self.client.pipeline(transaction=False)
        pipe.blmove(self.keys.ready, self.proc, block_s, "LEFT", "RIGHT")
        self._take(max_messages - 1, pipe)
        first, rest = pipe.execute()
        return [first, *rest] if first is not None else list(rest)

    def _reap_if_due(self) -> None:
        now = time.monotonic()
        if now >= self.next_reap:
            self.next_reap = now + self.backend.reap_interval_s
            self.scripts["list_reap"](keys=[self.keys.ready, self.keys.consumers], args=[self.keys.prefix, ""])

    def ack(self, batch: Batch) -> None:
        self._settle(batch, "ack")

    def nack(self, batch: Batch, *, requeue: bool = True) -> None:
        self._settle(batch, "requeue" if requeue else "dead")

    def _settle(self, batch: Batch, mode: str) -> None:
        tokens = sorted(batch.receipts or ())
        if not tokens:
            return
        expected = len(self.outstanding)
        if mode == "ack" and self.outstanding[: len(tokens)] == tokens:
            args: list[Any] = ["trim", expected, len(tokens)]
            del self.outstanding[: len(tokens)]
        else:
            position = {token: i for i, token in enumerate(self.outstanding)}
            positions = [position[t] for t in tokens if t in position]
            args = [mode, expected, *positions]
            settled = set(tokens)
            self.outstanding = [t for t in self.outstanding if t not in settled]
        keys = [self.proc, self.keys.ready, self.keys.dead]
        with wrap_errors(self.backend, "ack on"):
            if self.scripts["list_settle"](keys=keys, args=args) == -1:
                # reaped while we were busy: every message went back to the queue already
                self.outstanding.clear()

    def release(self) -> None:
        """Return the processing list to the head of the queue and unregister."""
        self.outstanding.clear()
        self.scripts["list_reap"](keys=[self.keys.ready, self.keys.consumers], args=[self.keys.prefix, self.id])
