"""Rows the django tests store by hand, as a run would have stored them: ``stored_spec``, the
``Run.spec`` of a small burst."""

from __future__ import annotations

from typing import Any


def stored_spec(backend: str) -> dict[str, Any]:
    """The spec a 1,000-event burst on ``backend`` stores on its run (its options included)."""
    return {
        "backend": backend,
        "events": 1000,
        "producers": 1,
        "consumers": 1,
        "events_per_message": 1,
        "batch": 100,
        "idle_timeout_s": 10.0,
        "rate_eps": None,
        "duration_s": 10.0,
        "warmup_s": 0.0,
        "arrival": "uniform",
        "seed": 1,
        "faults": [],
        "replace_after_s": 1.0,
        "options": {},
    }
