"""The live source of the dashboard's websockets (``consumers.py`` is their thin edge).

A run executes in a cluster process and its page is served by the web process, so the live view
cannot rest on the in-memory channel layer. Two paths:

- **Embedded (default):** the websockets follow the run's stored samples. One ``RunFollower``
  per run per web process (per event loop) reads the database once per ``FOLLOW_INTERVAL_S``
  and fans what it read out to every viewer of that run; it keeps the run's samples in memory,
  so a viewer that joins late gets its history from there, without a read of its own. The
  overview likewise has one ``OverviewFollower``.
- **Redis** (``IMQ_CHANNEL_REDIS_URL``): the executor publishes each sample to the group
  ``run-<id>`` (``publisher.py``); a consumer joins the group, then reads the history, so that
  nothing falls between the two, and drops what it already has by ``t_s``.

Either way a viewer's messages go through an ``Outbox``: at most one message per
``MIN_SEND_INTERVAL_S`` (samples arriving meanwhile are merged into the next), and never a
sample whose ``t_s`` is not after the last one sent on that socket.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from experiments import selectors

log = logging.getLogger(__name__)

#: How often a follower reads the database: samples are stored about once a second.
FOLLOW_INTERVAL_S = 0.5
#: At most two messages per second per socket, whatever the event rate.
MIN_SEND_INTERVAL_S = 0.5

Columns = dict[str, list]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def after_t_s_parse(raw: str | None) -> float | None:
    """The ``after`` a page sends (the last sample it has) as seconds, ``None`` when absent;
    ``ValueError`` when it is not a finite number (``nan`` would match no sample and hide that
    the client is wrong)."""
    if not raw:
        return None
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    return value


def uses_channel_layer() -> bool:
    """True when runs publish their samples through channels-redis (``IMQ_CHANNEL_REDIS_URL``);
    the in-memory layer cannot cross processes, so then the websockets follow the database."""
    return "channels_redis" in settings.CHANNEL_LAYERS["default"]["BACKEND"]


def run_group(run_id: int) -> str:
    return f"run-{run_id}"


def columns_after(columns: Columns, after_t_s: float | None) -> Columns:
    """The samples of ``columns`` (ordered by ``t_s``) whose ``t_s`` is after ``after_t_s``."""
    start = 0 if after_t_s is None else bisect.bisect_right(columns["t_s"], after_t_s)
    return {name: values[start:] for name, values in columns.items()}


def columns_extend(columns: Columns, more: Columns) -> None:
    for name, values in more.items():
        columns.setdefault(name, []).extend(values)


class Outbox:
    """What one socket still has to send, sent at most once per ``MIN_SEND_INTERVAL_S``.

    ``put`` takes the run's latest state and samples; it keeps only those after the last ``t_s``
    already queued (no repeats, whatever path they came by), merges them with what waits, and
    sends when the interval since the last message has passed (else once it has). ``last_t_s``
    is the last sample's ``t_s`` handed to this socket."""

    def __init__(self, send: Send, *, after_t_s: float | None = None) -> None:
        self.send, self.last_t_s = send, after_t_s
        self.state: dict[str, Any] | None = None
        self.pending: Columns = {}
        self.dirty = False
        self.sent_at = 0.0
        self.flushing: asyncio.TimerHandle | None = None
        self.messages = 0

    def put(self, state: dict[str, Any] | None, columns: Columns | None = None) -> None:
        fresh = columns_after(columns, self.last_t_s) if columns else {}
        if fresh.get("t_s"):
            columns_extend(self.pending, fresh)
            self.last_t_s = fresh["t_s"][-1]
            self.dirty = True
        if state is not None and state != self.state:
            self.state, self.dirty = state, True
        if self.dirty and self.flushing is None:
            delay = max(0.0, self.sent_at + MIN_SEND_INTERVAL_S - time.monotonic())
            self.flushing = asyncio.get_running_loop().call_later(delay, self._flush)

    def _flush(self) -> None:
        self.flushing = None
        message = {"type": "run", "run": self.state, "columns": self.pending}
        self.pending, self.dirty, self.sent_at = {}, False, time.monotonic()
        self.messages += 1
        task = asyncio.ensure_future(self.send(message))
        task.add_done_callback(_log_failure)

    def close(self) -> None:
        if self.flushing is not None:
            self.flushing.cancel()
            self.flushing = None


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("live: a websocket send failed: %r", task.exception())


class RunFollower:
    """The stored samples of one run, followed for every viewer of it in this process.

    One database read per ``interval_s`` (``reads`` counts them), shared by all viewers; it
    stops reading once the run has ended (it keeps what it read for late viewers) and is
    dropped when its last viewer leaves."""

    def __init__(self, run_id: int, *, interval_s: float = FOLLOW_INTERVAL_S) -> None:
        self.run_id, self.interval_s = run_id, interval_s
        self.columns: Columns = {name: [] for name in selectors.SAMPLE_COLUMNS}
        self.state: dict[str, Any] | None = None
        self.missing = False
        self.viewers: set[Outbox] = set()
        self.reads = 0
        self.task: asyncio.Task | None = None

    def add(self, viewer: Outbox) -> None:
        self.viewers.add(viewer)
        if self.state is not None:  # already read: the history comes from memory, at once
            viewer.put(self.state, self.columns)
        if self.task is None:
            self.task = asyncio.ensure_future(self._follow())

    def remove(self, viewer: Outbox) -> None:
        self.viewers.discard(viewer)
        viewer.close()

    async def _follow(self) -> None:
        while self.viewers and not (self.state and self.state["ended"]) and not self.missing:
            await self.read()
            for viewer in list(self.viewers):
                viewer.put(self.state, self.columns)
            await asyncio.sleep(self.interval_s)

    async def read(self) -> None:
        last = self.columns["t_s"][-1] if self.columns["t_s"] else None
        data = await database_sync_to_async(selectors.run_live_read)(run_id=self.run_id, after_t_s=last)
        self.reads += 1
        if data is None:
            self.missing = True
            return
        columns_extend(self.columns, data["columns"])
        self.state = data["run"]


class OverviewFollower:
    """The overview's rows, read once per ``interval_s`` for every overview viewer."""

    def __init__(self, *, interval_s: float = FOLLOW_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.rows: list[dict[str, Any]] | None = None
        self.viewers: set[Send] = set()
        self.reads = 0
        self.task: asyncio.Task | None = None

    def add(self, viewer: Send) -> None:
        self.viewers.add(viewer)
        if self.rows is not None:
            asyncio.ensure_future(viewer({"type": "overview", "runs": self.rows})).add_done_callback(_log_failure)
        if self.task is None:
            self.task = asyncio.ensure_future(self._follow())

    def remove(self, viewer: Send) -> None:
        self.viewers.discard(viewer)

    async def _follow(self) -> None:
        while self.viewers:
            rows = await database_sync_to_async(selectors.runs_overview)()
            self.reads += 1
            if rows != self.rows:  # unchanged rows are not sent again
                self.rows = rows
                for viewer in list(self.viewers):
                    asyncio.ensure_future(viewer({"type": "overview", "runs": rows})).add_done_callback(_log_failure)
            await asyncio.sleep(self.interval_s)


# One follower per run (and one overview) per event loop: daphne has one loop per process;
# tests run each scenario in a loop of its own.
_run_followers: dict[tuple[int, int], RunFollower] = {}
_overview_followers: dict[int, OverviewFollower] = {}


def run_follower(run_id: int) -> RunFollower:
    key = (id(asyncio.get_running_loop()), run_id)
    if key not in _run_followers:
        _run_followers[key] = RunFollower(run_id)
    return _run_followers[key]


def run_unfollow(follower: RunFollower, viewer: Outbox) -> None:
    follower.remove(viewer)
    if not follower.viewers:
        if follower.task is not None:
            follower.task.cancel()
        key = (id(asyncio.get_running_loop()), follower.run_id)
        if _run_followers.get(key) is follower:
            del _run_followers[key]


def overview_follower() -> OverviewFollower:
    key = id(asyncio.get_running_loop())
    if key not in _overview_followers:
        _overview_followers[key] = OverviewFollower()
    return _overview_followers[key]


def overview_unfollow(follower: OverviewFollower, viewer: Send) -> None:
    follower.remove(viewer)
    if not follower.viewers:
        if follower.task is not None:
            follower.task.cancel()
        key = id(asyncio.get_running_loop())
        if _overview_followers.get(key) is follower:
            del _overview_followers[key]


async def run_history(viewer: Outbox, run_id: int) -> dict[str, Any] | None:
    """Redis path: the run's state and its samples after the viewer's last, from the database
    (after joining the group, so that nothing falls between this and the published ones)."""
    data = await database_sync_to_async(selectors.run_live_read)(run_id=run_id, after_t_s=viewer.last_t_s)
    if data is not None:
        viewer.put(data["run"], data["columns"])
    return data


async def run_published(viewer: Outbox, run_id: int, event: dict[str, Any]) -> None:
    """Redis path: a sample or the run's end as the executor published it. A message whose
    previous sample this socket never got (the group's capacity overflowed, a publish failed)
    or the run's end fills the gap from the database first."""
    columns = event.get("columns") or {}
    prev_t_s = event.get("prev_t_s")
    missed = prev_t_s is not None and (viewer.last_t_s is None or prev_t_s > viewer.last_t_s)
    if missed or event["run"].get("ended"):
        data = await database_sync_to_async(selectors.run_live_read)(run_id=run_id, after_t_s=viewer.last_t_s)
        if data is not None:
            viewer.put(None, data["columns"])
    state = {**(viewer.state or {}), **event["run"]}
    viewer.put(state, columns)
