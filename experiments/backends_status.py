"""What ``listbackends`` (and later the admin) shows: each backend, its guarantees, reachability."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from queues.approaches import APPROACHES, DESCRIPTIONS
from queues.backends import BACKENDS, backend_class
from queues.errors import QueueError
from queues.launch import build_backend


def backend_statuses(*, urls: Mapping[str, str]) -> list[dict[str, Any]]:
    rows = [_backend_status(alias, urls) for alias in sorted(BACKENDS)]
    rows += [
        {"alias": alias, "kind": "approach", "state": "in-process", "url": "-", "capabilities": {},
         "options": [], "description": DESCRIPTIONS[alias], "detail": ""}
        for alias in sorted(APPROACHES)
    ]
    return rows


def _backend_status(alias: str, urls: Mapping[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {"alias": alias, "kind": "backend", "options": [], "description": "", "detail": ""}
    try:
        row["options"] = [option.describe() for option in backend_class(alias).options]
        backend = build_backend(alias, urls=urls)
    except QueueError as exc:
        return {**row, "state": "unavailable", "url": "-", "capabilities": {}, "detail": str(exc)}
    row.update(url=backend.describe_url() if backend.url else "(in process)", capabilities=backend.capabilities.as_dict())
    if not backend.url:
        return {**row, "state": "ready"}
    try:
        backend.connect()
    except QueueError as exc:
        return {**row, "state": "unreachable", "detail": str(exc)}
    finally:
        backend.close()
    return {**row, "state": "reachable"}
