"""Text helpers for messages, a leaf module: it imports nothing of imqueue."""

from __future__ import annotations

import difflib


def suggest(alias: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` when a close alias exists, else an empty string."""
    close = difflib.get_close_matches(alias, choices, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
