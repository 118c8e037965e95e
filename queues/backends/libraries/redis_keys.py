"""The keys a Redis-based task library leaves for one run, found by the run's queue name.

The libraries name their keys themselves (``rq:queue:<name>``, ``dramatiq:<name>.DQ``,
``huey.redis.<name>``); each backend gives the glob patterns of its run's keys, every one with
the queue name followed by a separator or the end, so that a run's name that prefixes another
run's (``imq.ab`` and ``imq.abc``) never matches the other's keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from queues.backends._redis import RedisBase
from queues.backends.libraries.base import LibraryBackend

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
SCAN_COUNT = 500


def glob_escape(text: str) -> str:
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def unlink_matching(client: Any, patterns: Iterable[str]) -> int:
    """UNLINK every key matching one of ``patterns`` (SCAN); how many were removed."""
    removed = 0
    for pattern in patterns:
        batch: list[Any] = []
        for key in client.scan_iter(match=pattern, count=SCAN_COUNT):
            batch.append(key)
            if len(batch) >= SCAN_COUNT:
                removed += client.unlink(*batch)
                batch.clear()
        if batch:
            removed += client.unlink(*batch)
    return removed


def queues_matching(client: Any, pattern: str, namespace: str, extract: Any) -> list[str]:
    """The run queues under ``namespace`` named by the keys matching ``pattern``;
    ``extract(key)`` returns the queue a key belongs to, or ``None``."""
    found = set()
    for key in client.scan_iter(match=pattern, count=1000):
        name = extract(key.decode() if isinstance(key, bytes) else key)
        if name and name.startswith(f"{namespace}."):
            found.add(name)
    return sorted(found)


class RedisLibraryBackend(RedisBase, LibraryBackend):
    """A task library on Redis: the lab's Redis connection handling for the control connection
    and the probe; the library's own clients for its producers and workers."""

    def probe(self, role: str) -> None:
        self.new_client(role).close()

    cut_connections = LibraryBackend.cut_connections  # not RedisBase's: see LibraryBackend
