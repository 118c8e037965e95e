"""Saturation search: the highest rate at which a queue keeps up within a p99 latency SLO.

Each step is a short steady run. The rate doubles until a step fails, then the interval
between the last good and the first bad rate is bisected until it is within ``tolerance``.
A step is good when the queue kept up (``kept_up``, see ``queues.measurement.summary``), the producers kept
the rate the schedule offered, and p99 latency over the measured window is within the SLO.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

MAX_RATE_EPS = 10_000_000


@dataclass(frozen=True)
class CurvePoint:
    rate_eps: float
    p99_ms: float | None
    kept_up: bool
    ok: bool
    send_eps: float
    consume_eps: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def step_ok(summary: dict[str, Any], slo_p99_ms: float) -> CurvePoint:
    """Judge one step's summary against the SLO."""
    p99 = (summary.get("latency_ms") or {}).get("p99")
    # ``rate_error`` compares with what the schedule offered in the window (a Poisson schedule
    # offers more or less than rate x duration); a summary without it, with the nominal rate
    rate_error = summary.get("rate_error")
    if rate_error is None:
        rate_error = summary.get("send_eps", 0.0) / summary["rate_eps"] - 1
    rate_kept = rate_error >= -0.01
    ok = bool(summary.get("kept_up")) and rate_kept and p99 is not None and p99 <= slo_p99_ms
    ok = ok and summary.get("status", "succeeded") == "succeeded"
    return CurvePoint(
        summary["rate_eps"],
        p99,
        bool(summary.get("kept_up")),
        ok,
        summary.get("send_eps", 0.0),
        summary.get("consume_eps", 0.0),
    )


def find_max_rate(
    run_step: Callable[[float], dict[str, Any]],
    *,
    slo_p99_ms: float,
    start_rate_eps: float = 1000.0,
    tolerance: float = 0.05,
    max_steps: int = 14,
    on_point: Callable[[CurvePoint], None] | None = None,
) -> tuple[float | None, list[CurvePoint]]:
    """``(highest good rate or None, curve sorted by rate)``; ``run_step(rate)`` returns the
    summary of a steady run at ``rate``."""
    curve: list[CurvePoint] = []

    def probe(rate: float) -> bool:
        point = step_ok(run_step(round(rate, 1)), slo_p99_ms)
        curve.append(point)
        if on_point:
            on_point(point)
        return point.ok

    good, bad, rate = None, None, start_rate_eps
    while len(curve) < max_steps and (good is None or bad is None):
        if probe(rate):
            good = rate
            if rate >= MAX_RATE_EPS:
                break
            rate = min(rate * 2, MAX_RATE_EPS)
        else:
            bad = rate
            if good is None:
                rate /= 4
                if rate < 1:
                    break
    while good is not None and bad is not None and len(curve) < max_steps and (bad - good) / good > tolerance:
        middle = (good + bad) / 2
        if probe(middle):
            good = middle
        else:
            bad = middle
    return (round(good, 1) if good is not None else None), sorted(curve, key=lambda p: p.rate_eps)
