"""The run's summary, computed from what was counted: pure functions, no I/O, no clock.

``summarise`` gives the figures every run has (the JSON contract of ``runexperiment --json``,
see the README); ``steady_figures`` what a steady run adds. Both take the accounting's figures as
plain values, so they can be tested from synthetic inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from queues.ledger import LedgerResult
from queues.metrics import Sample, percentiles_ms
from queues.workload import WorkloadSpec

KEEP_UP_RATIO = 0.99  # consumption within 1% of the offered rate
KEEP_UP_BACKLOG_S = 1.0  # and no more than a second of events waiting at the window's end


def summarise(
    *,
    run_id: str,
    spec: WorkloadSpec,
    status: str,
    error: str | None,
    ledger: LedgerResult,
    drain_s: float,
    latency: Any,
    latency_from_send: Any,
    publish: Any | None,
    poison: int,
    killed_workers: Sequence[dict[str, Any]] = (),
    recovered_at_end: int = 0,
    stuck: int | None = None,
    findings: Sequence[str] = (),
) -> dict[str, Any]:
    """The run's summary: the JSON contract of ``runexperiment --json`` (see the README)."""
    verdict, reasons = judge(ledger=ledger, poison=poison, stuck=stuck)
    return {
        "run_id": run_id,
        "status": status,
        "error": error,
        "backend": spec.backend,
        "events": spec.events,
        "producers": spec.producers,
        "consumers": spec.consumers,
        "events_per_message": spec.events_per_message,
        "batch": spec.batch,
        "duration_s": round(drain_s, 6),
        "throughput_eps": round(ledger.unique / drain_s, 1) if drain_s > 0 else 0.0,
        "sum": ledger.raw_sum,
        "unique_sum": ledger.unique_sum,
        "expected_sum": ledger.expected_sum,
        "received": ledger.received,
        "unique": ledger.unique,
        "duplicates": ledger.duplicates,
        "lost": ledger.lost,
        "corrupt": ledger.corrupt,
        "poison": poison,
        "verdict": verdict,
        "verdict_reasons": reasons,
        "recovered_at_end": recovered_at_end,
        "stuck": stuck,
        "latency_ms": percentiles_ms(latency),
        "latency_from_send_ms": percentiles_ms(latency_from_send),
        "publish_ms": percentiles_ms(publish) if publish is not None else None,
        "killed_consumers": sum(1 for w in killed_workers if w["role"] == "consumer"),
        "killed_workers": list(killed_workers),
        "findings": list(findings),
    }


EXACT, DUPLICATED, LOST, CORRUPT = "exact", "duplicated", "lost", "corrupt"


def judge(*, ledger: LedgerResult, poison: int, stuck: int | None) -> tuple[str, list[str]]:
    """The verdict and every reason it is not ``exact``.

    ``exact`` only if both sums match N(N+1)/2 (over unique events and over every delivery), no
    event came twice, none is missing, and nothing arrived that is not an event of the run
    (no corrupt record, no poison message). Otherwise the worst of: ``lost`` (events never
    counted), ``corrupt`` (something unexplained arrived, or a sum does not match for another
    reason), ``duplicated`` (every event, some more than once: at-least-once delivery).
    """
    reasons = []
    if ledger.lost:
        where = f"; {stuck:,} message(s) still in the queue after the final drain" if stuck else ""
        reasons.append(f"{ledger.lost:,} event(s) never received{where}")
    if ledger.corrupt:
        reasons.append(f"{ledger.corrupt:,} corrupt record(s): well-formed events that are not the run's")
    if poison:
        reasons.append(f"{poison:,} poison message(s): bodies that are not events")
    if ledger.duplicates:
        reasons.append(f"{ledger.duplicates:,} duplicate deliveries")
    sums_match = ledger.unique_sum == ledger.expected_sum and ledger.raw_sum == ledger.expected_sum
    if not sums_match and not reasons:
        reasons.append(f"sum {ledger.raw_sum:,} (unique {ledger.unique_sum:,}) against {ledger.expected_sum:,}")
    if ledger.lost:
        return LOST, reasons
    if ledger.corrupt or poison or not (sums_match or ledger.duplicates):
        return CORRUPT, reasons
    return (DUPLICATED if ledger.duplicates else EXACT), reasons


def loss_judgement(*, lost: int, at_least_once: bool, backend: str) -> tuple[str | None, str | None]:
    """``(error, finding)`` for ``lost`` events: on a backend that declares at-least-once
    delivery a loss is a failure of the run (the error); on an at-most-once one it is what the
    backend promises, a finding of the run."""
    if not lost:
        return None, None
    if at_least_once:
        return f"{lost:,} event(s) lost on an at-least-once backend ({backend})", None
    return None, (
        f"{lost:,} event(s) lost: {backend} is at-most-once (no acks, or no redelivery after a "
        "consumer crash), so what a killed consumer held, or a message dropped, is gone"
    )


def drain_seconds(*, t0_ns: int, last_new_ns: int, unique: int) -> float:
    """From the start signal to the last new event received (0 when nothing arrived)."""
    return max(0.0, (last_new_ns - t0_ns) / 1e9) if unique else 0.0


def offered_eps(spec: WorkloadSpec, begin_s: float, end_s: float) -> float | None:
    """The schedule's rate over ``[begin_s, end_s]`` seconds into the run (zero once the
    schedule is over); ``None`` for a burst."""
    if not spec.steady or end_s <= begin_s:
        return None
    overlap = max(0.0, min(end_s, spec.warmup_s + spec.duration_s) - begin_s)
    return round(spec.rate_eps * overlap / (end_s - begin_s), 1)


def consume_eps(
    *, receipts: Sequence[tuple[int, int]], window_ns: tuple[int, int], median_latency_ms: float, duration_s: float
) -> float:
    """Events received per second over the measured window shifted by the median latency:
    the events the window offered arrive that much later, and a window of receipt times
    that is not shifted would miss the last ones and count warm-up ones in their place.
    ``receipts`` are ``(received_ns, events)`` per report."""
    begin, end = (int(t + median_latency_ms * 1e6) for t in window_ns)
    received = sum(n for at, n in receipts if begin <= at < end)
    return received / duration_s


@dataclass(frozen=True)
class SteadyCounts:
    """What the accounting counted that the steady figures need."""

    t0_ns: int  # the start signal, on ``time.time_ns``
    window_ns: tuple[int, int]  # the measured window of intended send times
    measured_sent: int  # events of the measured window the producers sent
    last_send_ns: int  # the producers' last send
    last_new_ns: int  # the last new event received
    receipts: Sequence[tuple[int, int]]  # (received_ns, events) per consumer report


def steady_figures(
    *, spec: WorkloadSpec, counts: SteadyCounts, samples: Sequence[Sample], latency: Any, send_delay: Any
) -> dict[str, Any]:
    """What a steady run adds to the summary (see the README's JSON table). ``latency`` and
    ``send_delay`` are the measured window's histograms."""
    window_start, window_end = counts.window_ns
    send_span_s = max(spec.duration_s, (counts.last_send_ns - window_start) / 1e9)
    send_eps = counts.measured_sent / send_span_s
    median = (percentiles_ms(latency) or {}).get("p50", 0.0)
    consumed_eps = consume_eps(
        receipts=counts.receipts, window_ns=counts.window_ns, median_latency_ms=median, duration_s=spec.duration_s
    )
    at_end = [x for x in samples if x.t_s <= (window_end - counts.t0_ns) / 1e9 + 0.5]
    backlog_end = max(at_end[-1].backlog, at_end[-1].depth or 0) if at_end else 0
    kept_up = consumed_eps >= KEEP_UP_RATIO * spec.rate_eps and backlog_end <= spec.rate_eps * KEEP_UP_BACKLOG_S
    delay = percentiles_ms(send_delay) or {}
    return {
        "rate_eps": spec.rate_eps,
        "duration_window_s": spec.duration_s,
        "warmup_s": spec.warmup_s,
        "arrival": spec.arrival,
        "send_eps": round(send_eps, 1),
        "consume_eps": round(consumed_eps, 1),
        "rate_error": round(send_eps / spec.rate_eps - 1, 5),
        "kept_up": bool(kept_up),
        "backlog_at_window_end": backlog_end,
        "send_delay_ms": {k: delay.get(k) for k in ("p50", "p99", "max")},
        "drain_s": round(max(0.0, (counts.last_new_ns - counts.last_send_ns) / 1e9), 6),
        "warnings": rate_warnings(spec=spec, send_eps=send_eps),
    }


def rate_warnings(*, spec: WorkloadSpec, send_eps: float) -> list[str]:
    """What the engine could not do as asked: a rate the producers could not keep."""
    if send_eps >= KEEP_UP_RATIO * spec.rate_eps:
        return []
    return [
        f"the producers sent {send_eps:,.0f} events/s, below the offered {spec.rate_eps:,.0f}: "
        "the engine or the backend's send path could not keep the rate, so these figures "
        "describe a lower load (events were sent late; see send_delay_ms)"
    ]
