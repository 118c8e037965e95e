"""Redis Streams: ``redis-stream``, a consumer group per queue, at-least-once.

Keys of queue ``q``: ``{q}:stream`` (entries with one field ``m``, the body) and ``{q}:dead``
(a list of dead letters).

- Send: ``XADD`` pipelined, one command per message, one round trip per batch.
- Receive: ``XREADGROUP GROUP g c COUNT n BLOCK t``. The reply is parsed by hiredis and sliced
  here: redis-py's default reply callback builds a dict per entry, which cost more than the
  command itself.
- Ack: one ``XACK`` with the batch's ids. Requeue and dead letters go through a Lua script that
  copies the body (to the end of the stream, or to the dead-letter list) and acks the original.
- Dead consumers: every ``claim_interval_s`` (0.5 s) a consumer runs ``XAUTOCLAIM`` for entries
  pending longer than ``claim_idle_s`` (2 s) and takes them as its own. A consumer that holds a
  batch longer than that is presumed dead: duplicates, never losses.
- Trimming: every ``trim_interval_s`` (1 s) a consumer trims (``XTRIM MINID ~ ... LIMIT 0``)
  every entry older than the oldest one any group still needs (its oldest pending entry, from
  the ``XPENDING`` summary), so the stream holds about what was not yet acked plus one
  interval's worth, however fast the flow. ``depth_detail`` shows the stored length.
- ``close`` puts the consumer's pending entries back at the end of the stream at once.
- A lost connection fails the run (no automatic reconnect: see ``_redis``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import redis

from queues.backends._redis import RedisBase, RedisConsumer, as_bytes_list, key_prefix
from queues.backends.base import Batch, Capabilities, Consumer, Producer, log_nacked
from queues.backends.options import Option

log = logging.getLogger(__name__)

FIELD = b"m"
_entry_id = itemgetter(0)
_fields = itemgetter(1)
_body = itemgetter(1)


def _raw(response: Any, **options: Any) -> Any:
    """A reply callback that keeps the hiredis-parsed reply as it is."""
    return response


class RedisStreamBackend(RedisBase):
    """Options: ``claim_idle_s`` (2), ``claim_interval_s`` (0.5), ``trim_interval_s`` (1).

    In order (``fifo``) as long as nothing is redelivered: a requeued or reclaimed entry comes
    after newer ones."""

    name = "redis-stream"
    capabilities = Capabilities(durable=False, native_batch=True, push=True)
    scripts = ("stream_settle", "stream_release", "stream_trim", "stream_depth")
    options = (
        Option(
            "claim_idle_s",
            float,
            2.0,
            "an entry pending this long is presumed abandoned and claimed (XAUTOCLAIM)",
            minimum=0.01,
            maximum=3600,
            unit="s",
        ),
        Option(
            "claim_interval_s",
            float,
            0.5,
            "how often each consumer claims abandoned entries (0: on every call)",
            minimum=0,
            maximum=3600,
            unit="s",
        ),
        Option(
            "trim_interval_s",
            float,
            1.0,
            "how often a consumer trims entries every group has acked (0: on every call)",
            minimum=0,
            maximum=3600,
            unit="s",
        ),
        *RedisBase.options,
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.claim_idle_s = float(self.option_values["claim_idle_s"])
        self.claim_interval_s = float(self.option_values["claim_interval_s"])
        self.trim_interval_s = float(self.option_values["trim_interval_s"])
        # a dead consumer's pending entries are claimed once idle that long, at the next claim
        self.release_after_s = self.claim_idle_s + self.claim_interval_s

    @staticmethod
    def stream_key(queue: str) -> str:
        return key_prefix(queue) + "stream"

    @staticmethod
    def dead_key(queue: str) -> str:
        return key_prefix(queue) + "dead"

    def declare(self, queue: str) -> None:
        self.create_group(self.client, queue, "default")

    def create_group(self, client: redis.Redis, queue: str, group: str) -> None:
        """Create ``group`` reading from the stream's start. Idempotent."""
        with self.converting("declare a queue on"):
            try:
                client.xgroup_create(self.stream_key(queue), group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):  # the group exists: what idempotent means here
                    raise

    def purge(self, queue: str) -> int:
        with self.converting("purge a queue on"):
            return int(self.script("stream_depth")(keys=[self.stream_key(queue)], args=["purge"]))

    def delete(self, queue: str) -> None:
        self.delete_keys(queue)

    def depth(self, queue: str) -> int:
        """Exact: the group's pending entries plus its lag (the largest over groups)."""
        with self.converting("measure a queue on"):
            return int(self.script("stream_depth")(keys=[self.stream_key(queue)], args=["count"]))

    def depth_detail(self, queue: str) -> dict[str, int | None]:
        """``total`` (``depth``) and ``stream_length``, the entries stored (acked ones not yet
        trimmed included): what the samples show to prove that trimming keeps up."""
        return {"total": self.depth(queue), "stream_length": self.stream_length(queue)}

    def stream_length(self, queue: str) -> int:
        """Entries stored, acked or not (``XLEN``): shows that trimming keeps up."""
        with self.converting("measure a queue on"):
            return int(self.client.xlen(self.stream_key(queue)))

    def dead_letters(self, queue: str) -> list[bytes]:
        """The messages set aside with ``nack(requeue=False)``, oldest first."""
        with self.converting("read the dead letters on"):
            return as_bytes_list(self.client.lrange(self.dead_key(queue), 0, -1))

    def producer(self, queue: str) -> Producer:
        return _StreamProducer(self, queue)

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        return _StreamConsumer(self, queue, group)

    def environment(self) -> dict[str, Any]:
        return {
            **super().environment(),
            "claim_idle_s": self.claim_idle_s,
            "trim": "XTRIM MINID ~ LIMIT 0 (acked entries)",
        }


class _StreamProducer(Producer):
    def __init__(self, backend: RedisStreamBackend, queue: str) -> None:
        self.backend, self.key = backend, backend.stream_key(queue)
        self.client = backend.new_client("producer", queue)
        self.client.set_response_callback("XADD", _raw)

    def send_batch(self, messages: Sequence[bytes]) -> None:
        if not messages:
            return
        pipe = self.client.pipeline(transaction=False)
        xadd, key = pipe.xadd, self.key
        for body in messages:
            xadd(key, {FIELD: body})
        with self.backend.converting("send to"):
            pipe.execute()

    def close(self) -> None:
        self.client.close()


class _StreamConsumer(RedisConsumer):
    backend: RedisStreamBackend

    def __init__(self, backend: RedisStreamBackend, queue: str, group: str) -> None:
        self.backend, self.group, self.queue = backend, group, queue
        self.key, self.dead = backend.stream_key(queue), backend.dead_key(queue)
        self.name = uuid.uuid4().hex[:12]
        self.client = backend.new_client("consumer", queue)
        for command in ("XREADGROUP", "XAUTOCLAIM", "XACK"):
            self.client.set_response_callback(command, _raw)
        self.scripts = backend.register_scripts(self.client)
        backend.create_group(self.client, queue, group)
        self.claim_idle_ms = max(1, int(backend.claim_idle_s * 1000))
        self.claim_cursor = "0-0"
        self.next_claim = time.monotonic() + backend.claim_interval_s
        self.next_trim = time.monotonic() + backend.trim_interval_s

    def receive_batch(self, max_messages: int, timeout_s: float) -> Batch:
        with self.backend.converting("receive from"):
            try:
                self._housekeeping()
                entries = self._claim(max_messages) if time.monotonic() >= self.next_claim else []
                if not entries:
                    entries = self._read(max_messages, timeout_s)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # the server lost the group (restarted without persistence): declare it again,
                # from the start of what the stream holds now; what it held before is gone
                log.warning(
                    "%s: the consumer group of %s is gone (a server restart?); creating it again",
                    self.backend.name,
                    self.key,
                )
                self.backend.create_group(self.client, self.queue, self.group)
                return Batch()
        if not entries:
            return Batch()
        return Batch(list(map(_body, map(_fields, entries))), list(map(_entry_id, entries)))

    def _read(self, max_messages: int, timeout_s: float) -> list:
        block_ms = max(1, int(timeout_s * 1000))  # BLOCK 0 would wait forever
        reply = self.client.xreadgroup(self.group, self.name, {self.key: ">"}, count=max_messages, block=block_ms)
        if not reply:
            return []
        # RESP3 (redis-py's default from 8.0) answers a map {stream: entries}; RESP2 a list
        return next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]

    def _claim(self, max_messages: int) -> list:
        """Entries a dead consumer left pending for ``claim_idle_s``, now ours."""
        self.next_claim = time.monotonic() + self.backend.claim_interval_s
        cursor, entries, deleted = self.client.xautoclaim(
            self.key, self.group, self.name, self.claim_idle_ms, start_id=self.claim_cursor, count=max_messages
        )[:3]
        self.claim_cursor = cursor
        if deleted:  # trimmed while pending: nothing left to deliver, only to forget
            self.client.xack(self.key, self.group, *deleted)
            log.info("%s: %d pending entries were trimmed before they were reclaimed", self.backend.name, len(deleted))
        entries = [e for e in entries if e[1]]
        if entries:
            log.warning(
                "%s: reclaimed %d entries pending for over %.1f s (their consumer is presumed dead): redelivered",
                self.backend.name,
                len(entries),
                self.backend.claim_idle_s,
            )
        return entries

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self.next_trim:
            self.next_trim = now + self.backend.trim_interval_s
            self.scripts["stream_trim"](keys=[self.key])

    def ack(self, batch: Batch) -> None:
        if batch.receipts:
            with self.backend.converting("ack on"):
                self.client.xack(self.key, self.group, *batch.receipts)

    def nack(self, batch: Batch, *, requeue: bool = True) -> None:
        if batch.receipts:
            mode = "requeue" if requeue else "dead"
            with self.backend.converting("nack on"):
                self.scripts["stream_settle"](keys=[self.key, self.dead], args=[self.group, mode, *batch.receipts])
            log_nacked(log, self.backend.name, len(batch.receipts), requeue=requeue)

    def release(self) -> None:
        """Put the entries this consumer holds back in the stream and leave the group."""
        returned = self.scripts["stream_release"](keys=[self.key], args=[self.group, self.name])
        if returned:
            log.info("%s: a closing consumer put %d unacked entries back in the stream", self.backend.name, returned)
