"""Benchmark of the steady flow on ``memory-mp``, on this machine.

    .venv/bin/python bench/bench_steady.py [--quick]

1. 50,000 events/s for 20 s (1 producer, 1 consumer): achieved send rate vs offered, p99.
   Targets: within 1%, p99 < 5 ms.
2. Rate-keeping error (achieved vs offered over the measured window) from 100 to 100,000
   events/s. Target: under 1% everywhere, and an honest warning where a rate cannot be kept.
3. CPU used by the whole run (runner + producer + consumer) at 100 events/s, as a share of one
   core. Target: a few percent.
4. The harness's own ceiling: the saturation search on ``memory-mp`` (nothing slowed) with a
   p99 SLO of 5 ms: the highest rate the engine schedules and accounts for here.

Prints a table and writes ``bench/results/steady.json``. ``--quick`` shortens every run (for a
smoke check, not for the figures).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from queues.backends.memory import MultiprocessBackend  # noqa: E402
from queues.measurement.saturation import find_max_rate  # noqa: E402
from queues.run.runner import Runner  # noqa: E402
from queues.workload.spec import WorkloadSpec  # noqa: E402


def steady(rate: float, duration: float, warmup: float = 1.0) -> tuple[dict, float]:
    """The summary of one run, and the CPU seconds it used per wall second (all processes)."""
    spec = WorkloadSpec(backend="memory-mp", rate_eps=rate, duration_s=duration, warmup_s=warmup)
    before = _cpu_s()
    began = time.monotonic()
    summary = Runner(spec, MultiprocessBackend(), run_id=uuid.uuid4().hex[:8]).run().summary
    cpu_share = (_cpu_s() - before) / (time.monotonic() - began)
    assert summary["verdict"] == "exact", summary
    return summary, cpu_share


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    results: dict = {}

    s, _ = steady(50_000, 20 * scale)
    results["50k_for_20s"] = {
        k: s[k]
        for k in (
            "rate_eps",
            "send_eps",
            "rate_error",
            "consume_eps",
            "kept_up",
            "latency_ms",
            "latency_from_send_ms",
            "send_delay_ms",
        )
    }
    print(
        f"50,000 events/s for {20 * scale:.0f} s: sent {s['send_eps']:,.1f}/s ({s['rate_error']:+.3%}), "
        f"kept up {s['kept_up']}, p50 {s['latency_ms']['p50']} ms, p99 {s['latency_ms']['p99']} ms, "
        f"max {s['latency_ms']['max']} ms"
    )

    results["rate_error"] = []
    print("rate keeping (achieved vs offered, measured window):")
    for rate, duration in ((100, 20), (1_000, 10), (10_000, 10), (50_000, 10), (100_000, 10)):
        s, cpu = steady(rate, duration * scale)
        row = {
            "rate_eps": rate,
            "send_eps": s["send_eps"],
            "rate_error": s["rate_error"],
            "kept_up": s["kept_up"],
            "p99_ms": s["latency_ms"]["p99"],
            "cpu_cores": round(cpu, 3),
            "warnings": s["warnings"],
        }
        results["rate_error"].append(row)
        print(
            f"  {rate:>8,}/s  sent {s['send_eps']:>11,.1f}/s  error {s['rate_error']:+.3%}  kept up {s['kept_up']}  "
            f"p99 {s['latency_ms']['p99']:>8} ms  CPU {cpu:.1%} of a core" + ("  WARNING" if s["warnings"] else "")
        )

    def step(rate: float) -> dict:
        return steady(rate, 3 * scale, warmup=0.5)[0]

    best, curve = find_max_rate(step, slo_p99_ms=5.0, start_rate_eps=25_000)
    results["harness_ceiling"] = {"max_rate_eps": best, "slo_p99_ms": 5.0, "curve": [p.as_dict() for p in curve]}
    print(f"harness ceiling (memory-mp, p99 <= 5 ms): {best:,.0f} events/s")
    for p in curve:
        print(
            f"  {p.rate_eps:>10,.0f}/s  sent {p.send_eps:>11,.1f}/s  p99 {p.p99_ms} ms  kept up {p.kept_up}  ok {p.ok}"
        )

    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "steady.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
