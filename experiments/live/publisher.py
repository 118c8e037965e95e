"""The executor's side of the Redis live path: publish each stored sample, and the run's end, to
the run's channel group (``live.run_group``). Does nothing unless ``IMQ_CHANNEL_REDIS_URL`` is
set (the embedded path follows the stored samples instead).

The executor is synchronous. ``async_to_sync(group_send)`` per sample would make an event loop
(and, in channels-redis, a connection pool bound to that loop) per call: over an hour-long run,
3,600 loops and their connections. ``Publisher`` instead runs ONE event loop in ONE thread with
ONE channel layer for its life and hands it each message without waiting for it, so a slow
Redis never delays the run's own sampling.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from typing import Any

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers

from experiments import selectors
from experiments.live import source as live
from experiments.models import Run, Sample

log = logging.getLogger(__name__)

#: Messages handed to the loop and not yet sent; beyond it a message is dropped (logged), and
#: the viewers fill the gap from the database (each message names the sample before it).
MAX_PENDING = 200


class Publisher:
    """``publish(group, message)`` from any thread; ``close()`` sends what waits, closes the
    layer's connections and ends the thread (a later ``publish`` starts them again). One
    coroutine in the loop sends the messages one after another, in order, over one connection
    (concurrent sends would each take a connection from channels-redis's pool)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.layer: Any = None
        self.queue: asyncio.Queue | None = None
        self.sender: asyncio.Task | None = None
        self.lock = threading.Lock()
        self.waiting = 0
        self.published = self.dropped = self.failed = 0

    def _start(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
            # a layer of its own, not the process's shared one: closing its pools at the run's end
            # must not close those of a consumer that shares the process (a test, a dev server)
            self.layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
            self.thread = threading.Thread(target=self.loop.run_forever, name="imq-live-publisher", daemon=True)
            self.thread.start()
            self.queue, self.sender = asyncio.run_coroutine_threadsafe(self._begin(), self.loop).result()
        return self.loop

    async def _begin(self) -> tuple[asyncio.Queue, asyncio.Task]:
        """The queue and the sending task, made inside the loop that uses them."""
        queue: asyncio.Queue = asyncio.Queue()
        self.queue = queue
        return queue, asyncio.ensure_future(self._send_all())

    async def _shutdown(self) -> None:
        self.sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.sender
        await self.layer.close_pools()

    def publish(self, group: str, message: dict[str, Any]) -> None:
        with self.lock:
            if self.waiting >= MAX_PENDING:
                self.dropped += 1
                log.warning("live: %d messages wait for Redis; dropped one for %s", self.waiting, group)
                return
            self.waiting += 1
            loop = self._start()
            loop.call_soon_threadsafe(self.queue.put_nowait, (group, message))

    async def _send_all(self) -> None:
        while True:
            group, message = await self.queue.get()
            try:
                await self.layer.group_send(group, message)
                self.published += 1
            except Exception as exc:  # noqa: BLE001 - a lost message is filled in by the viewers
                self.failed += 1
                log.warning("live: could not publish to Redis: %r", exc)
            finally:
                with self.lock:
                    self.waiting -= 1
                self.queue.task_done()

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until every message handed to ``publish`` was sent (or failed)."""
        if self.loop is not None:
            try:
                asyncio.run_coroutine_threadsafe(self.queue.join(), self.loop).result(timeout_s)
            except concurrent.futures.TimeoutError:
                log.warning("live: %d messages still wait for Redis after %s s", self.waiting, timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        if self.loop is None:
            return
        self.flush(timeout_s)
        loop, thread = self.loop, self.thread
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout_s)
        except Exception as exc:  # noqa: BLE001 - closing must go on: the thread has to end
            log.warning("live: closing the Redis connections failed: %r", exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        loop.close()
        self.loop = self.thread = self.layer = self.queue = self.sender = None


_publisher = Publisher()
#: each run's last published sample t_s, so that a message names the one before it
_last_t_s: dict[int, float] = {}


def sample_published(*, run: Run, sample: Sample) -> None:
    """Publish a stored sample of ``run`` to its group (Redis path only)."""
    if not live.uses_channel_layer():
        return
    columns = {name: [getattr(sample, name)] for name in selectors.SAMPLE_COLUMNS}
    state = {
        "id": run.pk,
        "status": Run.Status.RUNNING,
        "ended": False,
        "progress": selectors.progress_of(
            spec=run.spec or {}, status=Run.Status.RUNNING, t_s=sample.t_s, unique=sample.unique
        ),
        "ledger": {"unique": sample.unique, "duplicates": max(0, sample.consumed - sample.unique), "lost": None},
    }
    message = {"type": "run.published", "run": state, "columns": columns, "prev_t_s": _last_t_s.get(run.pk)}
    _last_t_s[run.pk] = sample.t_s
    _publisher.publish(live.run_group(run.pk), message)


def run_ended(*, run_id: int) -> None:
    """Publish the end of run ``run_id`` (its verdict and summary, as stored), then close the
    publisher's loop and connections: an executor publishes for one run (Redis path only)."""
    if not live.uses_channel_layer():
        return
    run = Run.objects.get(pk=run_id)
    message = {
        "type": "run.published",
        "run": selectors.run_live_state(run=run),
        "columns": {},
        "prev_t_s": _last_t_s.pop(run.pk, None),
    }
    _publisher.publish(live.run_group(run.pk), message)
    _publisher.close()


# -- receivers of ``experiments.signals`` (connected in ``ExperimentsConfig.ready``) -----------


def on_sample_stored(sender: Any, *, run: Run, row: Sample, **kwargs: Any) -> None:
    """``sample_stored``: publish the stored row (a viewer may read it back)."""
    sample_published(run=run, sample=row)


def on_run_ended(sender: Any, *, run: Run, **kwargs: Any) -> None:
    """``run_ended``: publish the run's end as stored."""
    run_ended(run_id=run.pk)
