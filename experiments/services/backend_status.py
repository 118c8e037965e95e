"""What ``listbackends`` (and later the admin) shows: each backend, its guarantees, reachability."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from queues.backends import BACKENDS, backend_class
from queues.errors import QueueError
from queues.run.approaches import APPROACHES, DESCRIPTIONS
from queues.run.launch import build_backend


def backend_statuses(*, urls: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every backend (probed all at once, one thread each: a server that never answers costs
    its ``connect_timeout_s`` once, not once per backend in turn), then the approaches."""
    aliases = sorted(BACKENDS)
    with ThreadPoolExecutor(max_workers=len(aliases), thread_name_prefix="probe") as pool:
        rows = list(pool.map(lambda alias: _backend_status(alias, urls), aliases))
    rows += [
        {
            "alias": alias,
            "kind": "approach",
            "state": "in-process",
            "url": "-",
            "capabilities": {},
            "guarantee": None,
            "options": [],
            "description": DESCRIPTIONS[alias],
            "detail": "",
        }
        for alias in sorted(APPROACHES)
    ]
    return rows


def _backend_status(alias: str, urls: Mapping[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {"alias": alias, "kind": "backend", "options": [], "description": "", "detail": ""}
    try:
        cls = backend_class(alias)
        row.update(
            options=[option.describe() for option in cls.options],
            capabilities=cls.capabilities.as_dict(),
            guarantee=cls.capabilities.guarantee(),
        )
        backend = build_backend(alias, urls=urls)
    except QueueError as exc:
        return {"capabilities": {}, "guarantee": None, **row, "state": "unavailable", "url": "-", "detail": str(exc)}
    # an instance may declare other guarantees than its class (redis-list with ack=false)
    row.update(
        url=backend.describe_url() if backend.url else "(in process)",
        capabilities=backend.capabilities.as_dict(),
        guarantee=backend.capabilities.guarantee(),
    )
    if not backend.url:
        return {**row, "state": "ready"}
    try:
        backend.connect()
    except QueueError as exc:
        return {**row, "state": "unreachable", "detail": str(exc)}
    finally:
        backend.close()
    return {**row, "state": "reachable"}
