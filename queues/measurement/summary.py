"""The run's summary, computed from what was counted: pure functions, no I/O, no clock.

``summarise`` gives the figures every run has (the JSON contract of ``runexperiment --json``,
see docs/reference/json.md); ``steady_figures`` what a steady run adds. Both take the accounting's figures as
plain values, so they can be tested from synthetic inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from queues.measurement.histograms import IntervalSample, percentiles_ms
from queues.measurement.ledger import LedgerResult
from queues.workload.spec import WorkloadSpec

KEEP_UP_RATIO = 0.99  # at least 99% of the window's events received ...
KEEP_UP_LATENCY_MS = 1000.0  # ... p99 latency within a second of their intended time ...
KEEP_UP_BACKLOG_S = 1.0  # ... and no more than a second's worth of events due and not received at its end
SEND_DELAY_BOUND_MS = 100.0  # a schedule not followed: send delay p99 above this ...
SEND_DELAY_BOUND_GAPS = 10  # ... or above this many of a producer's inter-arrival times, whichever is larger
SEND_CALL_BOUND_SHARE = 0.5  # producers that spent this share of their time in send calls: the backend is the limit


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
    injected_poison: int = 0,
    killed_workers: Sequence[dict[str, Any]] = (),
    recovered_at_end: int = 0,
    stuck: int | None = None,
    findings: Sequence[str] = (),
) -> dict[str, Any]:
    """The run's summary: the JSON contract of ``runexperiment --json`` (docs/reference/json.md)."""
    verdict, reasons = judge(ledger=ledger, poison=poison, stuck=stuck, injected_poison=injected_poison)
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


def judge(*, ledger: LedgerResult, poison: int, stuck: int | None, injected_poison: int = 0) -> tuple[str, list[str]]:
    """The verdict and every reason it is not ``exact``.

    ``injected_poison`` malformed messages were sent by a ``poison`` fault of the run itself:
    set aside, they are explained and leave the verdict alone; only poison beyond them counts.

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
    poison = max(0, poison - injected_poison)
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


RECOVERY_TOLERANCE = 0.10  # recovered: the consume rate within 10% of the offered rate ...
RECOVERY_HOLD_S = 3.0  # ... for this long


#: Why a loss on an at-least-once backend can be what its settings allow rather than a failure
#: of its delivery (``loss_judgement``'s ``explained``).
LOST_IN_RESTART = (
    "the server restarted without persistence, so what its queue held went with it (a durability setting, "
    "not a delivery failure)"
)
LOST_UNCONFIRMED = (
    "a producer was killed or cut off while its sends were unconfirmed (no publisher confirms), so what it "
    "had sent may never have reached the queue (a publishing setting, not a delivery failure)"
)


def loss_judgement(
    *, lost: int, at_least_once: bool, backend: str, explained: str | None = None
) -> tuple[str | None, str | None]:
    """``(error, finding)`` for ``lost`` events: on a backend that declares at-least-once
    delivery a loss is a failure of the run (the error); on an at-most-once one it is what the
    backend promises, a finding of the run, and so is a loss ``explained`` by a setting in force
    (``LOST_IN_RESTART``, ``LOST_UNCONFIRMED``): its durability or its publishing, not its
    delivery, failed."""
    if not lost:
        return None, None
    if explained:
        return None, f"{lost:,} event(s) lost: {explained}"
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
    return round(spec.steady_rate_eps * overlap / (end_s - begin_s), 1)


@dataclass(frozen=True)
class SteadyCounts:
    """What the accounting counted that the steady figures need. Times on ``time.time_ns``;
    "window events" are those whose intended send time is in the measured window."""

    t0_ns: int  # the start signal
    window_ns: tuple[int, int]  # the measured window [begin, end) of intended send times
    offered: int  # window events: what the realised schedule offered in the window
    due_at_window_end: int  # events due by the window's end, warm-up included
    unique_by_window_end: int  # events received (unique) by the window's end
    measured_sent: int  # window events the producers sent
    last_window_send_ns: int  # the producers' last send of a window event
    window_received: int  # deliveries of window events
    last_window_receipt_ns: int  # the last of them
    last_send_ns: int  # the producers' last send
    last_new_ns: int  # the last new event received
    sent_total: int  # every event the producers sent


def steady_figures(
    *,
    spec: WorkloadSpec,
    counts: SteadyCounts,
    samples: Sequence[IntervalSample],
    latency: Any,
    send_delay: Any,
    publish: Any | None = None,
) -> dict[str, Any]:
    """What a steady run adds to the summary (docs/reference/json.md). ``latency`` and
    ``send_delay`` are the measured window's histograms, ``publish`` the send calls'.

    Send and consume rates share one span: from the window's start to the last send (for
    both) or receipt (for consumption) of a window event, at least the window's duration; so
    ``consume_eps`` never exceeds ``send_eps`` (duplicates aside). Both are judged against what
    the realised schedule offered in the window, not ``rate_eps`` times the duration, which a
    Poisson schedule misses by chance.
    """
    window_start = counts.window_ns[0]
    offered_eps = counts.offered / spec.duration_s
    send_span_s = max(spec.duration_s, (counts.last_window_send_ns - window_start) / 1e9)
    consume_span_s = max(send_span_s, (counts.last_window_receipt_ns - window_start) / 1e9)
    send_eps = counts.measured_sent / send_span_s
    rate_error = send_eps / offered_eps - 1 if offered_eps else 0.0
    backlog_end = max(0, counts.due_at_window_end - counts.unique_by_window_end)
    kept_up = kept_up_verdict(spec=spec, counts=counts, latency=latency, backlog_end=backlog_end)
    delay = percentiles_ms(send_delay) or {}
    worst = worst_interval_send_ratio(samples, begin_s=spec.warmup_s, end_s=spec.warmup_s + spec.duration_s)
    figures: dict[str, Any] = {
        "rate_eps": spec.rate_eps,
        "duration_window_s": spec.duration_s,
        "warmup_s": spec.warmup_s,
        "arrival": spec.arrival,
        "offered_in_window": counts.offered,
        "send_eps": round(send_eps, 1),
        "consume_eps": round(counts.window_received / consume_span_s, 1),
        "rate_error": round(rate_error, 5),
        "worst_interval_send_ratio": worst,
        "kept_up": bool(kept_up),
        "backlog_at_window_end": backlog_end,
        "send_delay_ms": {k: delay.get(k) for k in ("p50", "p99", "max")},
        "drain_s": round(max(0.0, (counts.last_new_ns - counts.last_send_ns) / 1e9), 6),
    }
    figures["warnings"] = rate_warnings(
        spec=spec, send_eps=send_eps, offered_eps=offered_eps, publish=publish, counts=counts
    ) + schedule_warnings(spec=spec, send_delay_p99_ms=delay.get("p99"), worst_ratio=worst)
    return figures


def kept_up_verdict(*, spec: WorkloadSpec, counts: SteadyCounts, latency: Any, backlog_end: int) -> bool:
    """The queue kept up: it delivered the window's events (99%), within a second of their
    intended time (p99), and was no more than a second of events behind at the window's end.
    Judged by intended time, so where a consumer's batch falls at the window's edge does not
    matter (a count of receipts in a time window missed the 1% bar by one batch)."""
    p99_ms = (percentiles_ms(latency) or {}).get("p99")
    return (
        counts.window_received >= KEEP_UP_RATIO * counts.offered
        and (p99_ms is None or p99_ms <= KEEP_UP_LATENCY_MS)
        and backlog_end <= spec.steady_rate_eps * KEEP_UP_BACKLOG_S
    )


def worst_interval_send_ratio(samples: Sequence[IntervalSample], *, begin_s: float, end_s: float) -> float | None:
    """The lowest, over the sample intervals that overlap the measured window, of the events
    sent in the interval over the events the schedule made due in it; ``None`` without such an
    interval. On time, every interval is about 1; a producer stalled for a whole interval
    makes it 0."""
    ratios, previous = [], None
    for sample in samples:
        start_s = previous.t_s if previous else 0.0
        if previous is not None and sample.due is not None and previous.due is not None:
            due = sample.due - previous.due
            if due > 0 and start_s < end_s and sample.t_s > begin_s:
                ratios.append((sample.produced - previous.produced) / due)
        previous = sample
    return round(min(ratios), 3) if ratios else None


def send_delay_bound_ms(spec: WorkloadSpec) -> float:
    """The send delay p99 above which the producers did not follow the schedule."""
    gap_ms = 1000.0 * spec.producers / spec.steady_rate_eps
    return max(SEND_DELAY_BOUND_MS, SEND_DELAY_BOUND_GAPS * gap_ms)


def schedule_warnings(*, spec: WorkloadSpec, send_delay_p99_ms: float | None, worst_ratio: float | None) -> list[str]:
    """A schedule the producers did not follow (a stall), even when they caught up by the end
    and the window's send rate looks right."""
    bound = send_delay_bound_ms(spec)
    if send_delay_p99_ms is None or send_delay_p99_ms <= bound:
        return []
    worst = f"; the worst sample interval sent {worst_ratio:.0%} of what was due" if worst_ratio is not None else ""
    return [
        f"the producers did not follow the schedule: send delay p99 {send_delay_p99_ms:,.1f} ms, above "
        f"{bound:,.0f} ms{worst} (a producer stalled or was starved of CPU), so the queue saw a "
        "burstier load than offered"
    ]


def rate_warnings(
    *,
    spec: WorkloadSpec,
    send_eps: float,
    offered_eps: float,
    publish: Any | None = None,
    counts: SteadyCounts | None = None,
) -> list[str]:
    """A rate the producers could not keep, compared with what the schedule offered in the same
    window, and which part held them back: the backend's send calls (they took at least
    ``SEND_CALL_BOUND_SHARE`` of the producers' time) or the engine's producer loop."""
    if send_eps >= KEEP_UP_RATIO * offered_eps:
        return []
    return [
        f"the producers sent {send_eps:,.0f} events/s, below the {offered_eps:,.0f} the schedule offered in the "
        f"window (rate {spec.rate_eps:,.0f}): {_send_limit(spec, publish, counts)}; these figures describe a "
        "lower load (events were sent late; see send_delay_ms)"
    ]


def _send_limit(spec: WorkloadSpec, publish: Any | None, counts: SteadyCounts | None) -> str:
    """Which part of sending could not keep the rate, from the send calls' histogram."""
    if publish is None or counts is None or publish.get_total_count() == 0 or counts.last_send_ns <= counts.t0_ns:
        return "the send calls were not measured"
    calls = publish.get_total_count()
    in_calls_s = publish.get_mean_value() * calls / 1e6
    share = in_calls_s / (spec.producers * (counts.last_send_ns - counts.t0_ns) / 1e9)
    per_call_ms = publish.get_value_at_percentile(50) / 1000
    events_per_call = counts.sent_total / calls
    gap_ms = 1000.0 * spec.producers / spec.steady_rate_eps
    detail = (
        f"the producers spent {share:.0%} of their time in the backend's send calls (p50 {per_call_ms:.3f} ms a "
        f"call of {events_per_call:,.1f} events, against {gap_ms:.3f} ms between a producer's events)"
    )
    if share >= SEND_CALL_BOUND_SHARE:
        return f"the backend's send calls are the limit: {detail}"
    return f"the engine's producer loop (encoding, scheduling, reporting: CPU) is the limit, not the backend: {detail}"


def recovery_s(samples: Sequence[IntervalSample], *, fault_s: float, offered_eps: float) -> float | None:
    """Seconds from a fault at ``fault_s`` until the consume rate is back within
    ``RECOVERY_TOLERANCE`` of ``offered_eps`` and stays there for ``RECOVERY_HOLD_S`` (a catch-up
    well above the offered rate is not recovered yet: the backlog is still draining). Counted
    from the start of the first interval of that stretch; ``None`` when the run's schedule ended
    first (then it did not recover within the run). Only intervals wholly within the schedule
    count: after it the offered rate falls to 0."""
    start: float | None = None
    previous_t = 0.0
    for sample in samples:
        begin, end = previous_t, sample.t_s
        previous_t = end
        if end <= fault_s:
            continue
        offered = sample.offered_eps
        if offered is None or offered < offered_eps * (1 - 1e-6):
            return None  # the schedule is over (or never was): no stretch of 3 s is left
        if begin < fault_s:
            continue  # the interval the fault came in is part of the disturbance
        if abs(sample.consume_eps - offered) <= RECOVERY_TOLERANCE * offered:
            start = begin if start is None else start
            if end - start >= RECOVERY_HOLD_S - 1e-9:
                return round(max(0.0, start - fault_s), 3)
        else:
            start = None
    return None


def fault_figures(
    *,
    faults: Sequence[dict[str, Any]],
    samples: Sequence[IntervalSample],
    offered_eps: float | None,
    reconnects: int,
    replaced: int,
    resend_bound: int,
    markers: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """What a run with faults adds to its summary: each fault (``queues.faults.injectors.TimedFault.report``)
    with its time to recover, the reconnects and replaced workers, an upper bound of the events
    producers may have sent twice (a reconnect's call sent again, a killed producer's last
    call), and every marker."""
    reported = []
    for fault in faults:
        applied = fault.get("applied_at_s")
        recovered = (
            recovery_s(samples, fault_s=applied, offered_eps=offered_eps)
            if applied is not None and offered_eps
            else None
        )
        reported.append({**fault, "recovered_after_s": recovered})
    return {
        "faults": reported,
        "reconnects": reconnects,
        "replaced_workers": replaced,
        "resend_bound": resend_bound,
        "markers": list(markers),
    }


def guarantee_contradictions(
    *,
    guarantee: str,
    lost: int,
    duplicates: int,
    resend_bound: int,
    redelivery_causes: int,
    loss_explained: bool = False,
) -> list[str]:
    """How a run's outcome contradicts the delivery guarantee its backend declares (empty: it
    does not). ``redelivery_causes`` counts what can make a queue deliver a message again
    (consumers killed, paused or cut off, connections reopened, a server restarted);
    ``resend_bound`` what producers may have sent twice themselves.

    - at-least-once: no event lost (except where ``loss_explained``: a restart of a server that
      keeps nothing on disk, a producer lost with unconfirmed sends); a duplicate beyond the
      producers' resends needs a cause (a message acked is delivered once);
    - at-most-once: a message is never delivered twice by the queue: any duplicate beyond the
      producers' resends contradicts it.
    """
    found = []
    redelivered = max(0, duplicates - resend_bound)
    if guarantee == "at-least-once":
        if lost and not loss_explained:
            found.append(f"declares at-least-once, but {lost:,} event(s) were lost")
        if redelivered and not redelivery_causes:
            found.append(
                f"declares at-least-once with one delivery per ack, but {redelivered:,} duplicate(s) came "
                "without a redelivery (no consumer was lost and no connection reopened)"
            )
    elif redelivered:
        found.append(f"declares {guarantee}, but the queue delivered {redelivered:,} event(s) twice")
    return found
