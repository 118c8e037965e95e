"""The dashboard's websockets. Thin: they check the user, parse the request and hand the
socket to the live source (``live.py``), which decides what is sent and when."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from experiments import selectors
from experiments.live import source as live

#: Close codes the page understands: not allowed (do not reconnect), no such run.
CLOSE_FORBIDDEN, CLOSE_NOT_FOUND = 4403, 4404
#: channels-redis forgets a group member after ``group_expiry``; re-join well before that.
REJOIN_S = 3600.0


def _is_staff(scope: dict[str, Any]) -> bool:
    user = scope.get("user")
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


class RunConsumer(AsyncJsonWebsocketConsumer):
    """``ws/runs/<id>/?after=<t_s>``: the run's state and its samples after ``after`` (the
    history), then the live ones; at the end, the summary and verdict. Staff only."""

    async def connect(self) -> None:
        if not _is_staff(self.scope):
            await self.close(code=CLOSE_FORBIDDEN)  # before accept: the handshake is refused
            return
        self.run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        if not await database_sync_to_async(selectors.run_exists)(run_id=self.run_id):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.outbox = live.Outbox(self.send_json, after_t_s=_after_t_s(self.scope))
        self.follower = None
        await self.accept()
        if live.uses_channel_layer():
            await self.channel_layer.group_add(live.run_group(self.run_id), self.channel_name)
            self.joined_at = time.monotonic()
            await live.run_history(self.outbox, self.run_id)
        else:
            self.follower = live.run_follower(self.run_id)
            self.follower.add(self.outbox)

    async def run_published(self, event: dict[str, Any]) -> None:
        """A message the executor published to the run's group (Redis path)."""
        if time.monotonic() - self.joined_at > REJOIN_S:
            await self.channel_layer.group_add(live.run_group(self.run_id), self.channel_name)
            self.joined_at = time.monotonic()
        await live.run_published(self.outbox, self.run_id, event)

    async def disconnect(self, code: int) -> None:
        if not hasattr(self, "outbox"):
            return
        if self.follower is not None:
            live.run_unfollow(self.follower, self.outbox)
        else:
            self.outbox.close()
            await self.channel_layer.group_discard(live.run_group(self.run_id), self.channel_name)


class OverviewConsumer(AsyncJsonWebsocketConsumer):
    """``ws/runs/``: the running and recent runs, sent whenever they change. Staff only."""

    async def connect(self) -> None:
        if not _is_staff(self.scope):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.accept()
        self.follower = live.overview_follower()
        self.follower.add(self.send_json)

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "follower"):
            live.overview_unfollow(self.follower, self.send_json)


def _after_t_s(scope: dict[str, Any]) -> float | None:
    """``?after=<t_s>``: the last sample the page has; absent or not a finite number: none."""
    try:
        return live.after_t_s_parse(parse_qs(scope.get("query_string", b"").decode()).get("after", [""])[0])
    except ValueError:
        return None
