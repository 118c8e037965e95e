"""The readable report of a run, as ``runexperiment`` prints it."""

from __future__ import annotations

from experiments.models import Run


def _latency_line(label: str, figures: dict | None) -> str:
    if not figures:
        return f"  {label:<22} (none recorded)"
    parts = "  ".join(f"{k} {figures[k]:,.3f}" for k in ("p50", "p90", "p99", "p999", "max") if k in figures)
    return f"  {label:<22} {parts} ms"


def format_report(run: Run) -> str:
    s = run.summary or {}
    if not s:
        return f"run {run.pk} ({run.backend}): {run.status}\n  error: {run.error}"
    # the sum line speaks of the sum only; the verdict line says what else was seen
    ok = "OK" if s["sum"] == s["expected_sum"] else "MISMATCH"
    lines = [
        f"run {run.pk} of '{run.experiment.name}': {s['backend']}, {s['events']:,} events, "
        f"{s['producers']} producer(s) -> {s['consumers']} consumer(s), "
        f"{s['events_per_message']} event(s)/message, {s['batch']} message(s)/call",
        f"  status                 {run.status}" + (f" ({run.error})" if run.error else ""),
        f"  sum                    {s['sum']:,} (expected {s['expected_sum']:,}) {ok}",
        f"  verdict                {s['verdict']}: {s['unique']:,} unique, {s['duplicates']:,} duplicates, "
        f"{s['lost']:,} lost, {s.get('corrupt', 0):,} corrupt, {s['poison']:,} poison",
        *_end_lines(s),
        f"  drain time             {s['duration_s']:.3f} s",
        f"  throughput             {s['throughput_eps']:,.0f} events/s",
        *(_steady_lines(s) if s.get("rate_eps") else []),
        *_fault_lines(s),
        _latency_line("end-to-end latency", s.get("latency_ms")),
        _latency_line("publish call", s.get("publish_ms")),
        *(
            [f"  measures               {run.environment['backend']['approach']}"]
            if (run.environment.get("backend") or {}).get("approach")
            else []
        ),
        f"  environment            Python {run.environment.get('python')}, {run.environment.get('cpu_count')} CPUs, "
        f"git {str(run.environment.get('git_revision') or 'unknown')[:10]}",
    ]
    return "\n".join(lines)


def _end_lines(s: dict) -> list[str]:
    """Why the verdict is not exact, what the final drain found, who was killed, findings."""
    lines = [f"  {'':<22} {reason}" for reason in s.get("verdict_reasons", [])]
    if s.get("stuck") is not None or s.get("recovered_at_end"):  # a queue was drained (not an approach)
        stuck = "unknown" if s.get("stuck") is None else f"{s['stuck']:,}"
        lines.append(
            f"  final drain            {s['recovered_at_end']:,} recovered at the end, {stuck} stuck in the queue"
        )
    lines += [
        f"  killed                 {w['role']} {w['index']}: {w['reason']} ({w['reported']:,} events reported, "
        f"{w['new_after_kill']:,} new after the kill)"
        for w in s.get("killed_workers", [])
    ]
    lines += [f"  finding                {finding}" for finding in s.get("findings", [])]
    return lines


def _fault_lines(s: dict) -> list[str]:
    """Each fault (when it was applied, what came of it, the time to recover), then what the
    run did about them and whether the outcome keeps to the backend's declared guarantee."""
    if not s.get("faults") and not s.get("markers"):
        return []
    lines = []
    for fault in s.get("faults", []):
        applied = fault.get("applied_at_s")
        recovered = fault.get("recovered_after_s")
        after = (
            ""
            if applied is None
            else ("; not recovered within the run" if recovered is None else f"; recovered after {recovered:g} s")
        )
        when = "not reached" if applied is None else f"at {applied:.2f} s"
        lines.append(f"  fault                  {fault['fault']} {when}: {fault.get('outcome') or '-'}{after}")
    lines.append(
        f"  faults' effects        {s.get('reconnects', 0)} reconnect(s), {s.get('replaced_workers', 0)} worker(s) "
        f"replaced, {s.get('redelivered', 0):,} redelivered, up to {s.get('resend_bound', 0):,} resent by producers"
    )
    contradictions = s.get("contradictions") or []
    verdict = "kept" if not contradictions else "CONTRADICTED: " + "; ".join(contradictions)
    lines.append(f"  guarantee              {s.get('guarantee')}: {verdict}")
    return lines


def _steady_lines(s: dict) -> list[str]:
    lines = [
        f"  offered rate           {s['rate_eps']:,.0f} events/s ({s['arrival']}) for {s['duration_window_s']} s "
        f"after a {s['warmup_s']} s warm-up",
        f"  achieved               sent {s['send_eps']:,.0f}/s ({s['rate_error']:+.2%} of the "
        f"{s.get('offered_in_window', 0):,} events the window offered), consumed {s['consume_eps']:,.0f}/s, "
        f"kept up: {'yes' if s['kept_up'] else 'NO'}, backlog at the window's end {s['backlog_at_window_end']:,}",
        f"  drain after sending    {s['drain_s']:.3f} s",
        _latency_line("latency from send", s.get("latency_from_send_ms")),
        _latency_line(
            "send delay", s.get("send_delay_ms") if (s.get("send_delay_ms") or {}).get("p50") is not None else None
        ),
    ]
    lines += [f"  warning                {w}" for w in s.get("warnings", [])]
    return lines


def format_spread(series) -> str:
    """The median and spread of a ``--repeat`` series."""
    result = series.result
    med, lo, hi = result["median"], result["min"], result["max"]
    lines = [f"series {series.pk}: {len(result['runs'])} runs of '{series.experiment.name}'"]
    for key, label in (
        ("duration_s", "drain time s"),
        ("throughput_eps", "throughput events/s"),
        ("send_eps", "send events/s"),
        ("consume_eps", "consume events/s"),
    ):
        if key in med:
            lines.append(f"  {label:<22} median {med[key]:,.3f}  min {lo[key]:,.3f}  max {hi[key]:,.3f}")
    for key in ("p50", "p99", "max"):
        if key in med.get("latency_ms", {}):
            lines.append(
                f"  latency {key:<14} median {med['latency_ms'][key]:,.3f}  min {lo['latency_ms'][key]:,.3f}  "
                f"max {hi['latency_ms'][key]:,.3f} ms"
            )
    verdicts = ", ".join(f"{r['run_id']}: {r.get('verdict', r['status'])}" for r in result["runs"])
    lines.append(f"  verdicts               {verdicts}")
    return "\n".join(lines)
