"""Clock offsets between machines, measured NTP-style against a reference clock.

One exchange: read the local clock (``t1``), ask the reference for its time (``server``), read
the local clock again (``t3``). The reference read its clock somewhere between t1 and t3, so
``offset = server - (t1 + t3) / 2`` is wrong by at most half the round trip. A reference that
truncates its reading to a resolution (SQLite's clock to the millisecond) read a time up to one
resolution later than it says: its reading is taken at the middle of that step, and half the
step is added to the bound. Of several exchanges the one with the
shortest round trip bounds the offset tightest: a delayed reply widens the interval, it never
shifts the truth out of it (NTP's clock filter keeps the minimum delay for the same reason).

Pure: the caller does the reading; times are seconds since the epoch (floats).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Exchanges per measurement: the shortest round trip of these is kept.
EXCHANGES = 5


@dataclass(frozen=True)
class ClockOffset:
    """``reference = local + offset_s``, true within ``uncertainty_s`` either way."""

    offset_s: float
    uncertainty_s: float

    def contains(self, offset_s: float, *, slack_s: float = 0.0) -> bool:
        """Whether ``offset_s`` lies within this measurement's bounds (widened by ``slack_s``)."""
        return abs(offset_s - self.offset_s) <= self.uncertainty_s + slack_s


def from_exchange(t1: float, server: float, t3: float, *, resolution_s: float = 0.0) -> ClockOffset:
    """The offset one exchange gives, and its bound (see the module's docstring)."""
    if t3 < t1:
        raise ValueError(f"the local clock went backwards during the exchange ({t1} -> {t3})")
    return ClockOffset(server + resolution_s / 2 - (t1 + t3) / 2, (t3 - t1) / 2 + resolution_s / 2)


def measure(
    local_s: Callable[[], float],
    reference_s: Callable[[], float],
    *,
    exchanges: int = EXCHANGES,
    resolution_s: float = 0.0,
) -> ClockOffset:
    """The tightest of ``exchanges`` exchanges between ``local_s`` and ``reference_s``."""
    best: ClockOffset | None = None
    for _ in range(exchanges):
        t1 = local_s()
        server = reference_s()
        t3 = local_s()
        found = from_exchange(t1, server, t3, resolution_s=resolution_s)
        if best is None or found.uncertainty_s < best.uncertainty_s:
            best = found
    assert best is not None, "at least one exchange"
    return best
