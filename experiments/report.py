"""The readable report of a run, as ``runexperiment`` prints it."""

from __future__ import annotations

from experiments.models import Run


def _latency_line(label: str, figures: dict | None) -> str:
    if not figures:
        return f"  {label:<22} (none recorded)"
    parts = "  ".join(f"{k} {figures[k]:,.3f}" for k in ("p50", "p90", "p99", "p999", "max"))
    return f"  {label:<22} {parts} ms"


def format_report(run: Run) -> str:
    s = run.summary or {}
    if not s:
        return f"run {run.pk} ({run.backend}): {run.status}\n  error: {run.error}"
    ok = "OK" if s["sum"] == s["expected_sum"] and s["verdict"] == "exact" else "MISMATCH"
    lines = [
        f"run {run.pk} of '{run.experiment.name}': {s['backend']}, {s['events']:,} events, "
        f"{s['producers']} producer(s) -> {s['consumers']} consumer(s), "
        f"{s['events_per_message']} event(s)/message, {s['batch']} message(s)/call",
        f"  status                 {run.status}" + (f" ({run.error})" if run.error else ""),
        f"  sum                    {s['sum']:,} (expected {s['expected_sum']:,}) {ok}",
        f"  verdict                {s['verdict']}: {s['unique']:,} unique, {s['duplicates']:,} duplicates, "
        f"{s['lost']:,} lost, {s['poison']:,} poison",
        f"  drain time             {s['duration_s']:.3f} s",
        f"  throughput             {s['throughput_eps']:,.0f} events/s",
        _latency_line("end-to-end latency", s.get("latency_ms")),
        _latency_line("publish call", s.get("publish_ms")),
        f"  environment            Python {run.environment.get('python')}, {run.environment.get('cpu_count')} CPUs, "
        f"git {str(run.environment.get('git_revision') or 'unknown')[:10]}",
    ]
    return "\n".join(lines)
