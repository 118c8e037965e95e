"""Median and spread (min, max) of the numeric figures of repeated runs."""

from __future__ import annotations

import statistics
from typing import Any

SKIP = {"run_id", "environment", "options"}  # options are inputs, the same in every run


def spread(summaries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{"median": {...}, "min": {...}, "max": {...}}`` over every numeric figure (nested
    dicts such as ``latency_ms`` keep their shape); non-numeric figures are left out."""
    return {
        "median": _reduce(summaries, statistics.median),
        "min": _reduce(summaries, min),
        "max": _reduce(summaries, max),
    }


def _reduce(items: list[dict[str, Any]], fn: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    keys = [k for k in items[0] if k not in SKIP] if items else []
    for key in keys:
        values: list[Any] = [item.get(key) for item in items]
        if all(isinstance(v, dict) for v in values):
            nested = _reduce(values, fn)
            if nested:
                out[key] = nested
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = fn(values)
    return out
