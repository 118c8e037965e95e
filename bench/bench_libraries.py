"""Task-library benchmark: each library backend through the engine, beside a minimal script of
the same library measured in the same run (alternated), and beside the raw backend it runs on.

One producer, 1 and 2 worker processes, one task per event (``events_per_message=1``), the
median of ``--repeat`` runs. For each library and worker count, the engine run and the reference
script (``reference_libraries.py``) alternate, so that a machine busy for a while slows both.
Figures: events/s (unique events over the drain time, from the start signal to the last event
counted; the reference: from its first enqueue until its workers counted the last task), p50 and
p99 latency (engine only), the harness overhead (reference events/s over engine events/s, minus
1), the raw backend's events/s with the same spec (messages of one event, ``batch`` per call),
and the verdict of one run whose consumer 0 is SIGKILLed mid-run.

Usage: ``flock /tmp/imq-bench.lock env PYTHONPATH=. .venv/bin/python bench/bench_libraries.py
[--events 20000] [--slow-events 20000] [--orm-events 20000] [--repeat 3] [--only rq]
[--option prompt_hub=false]``: an ``--option`` goes to the engine's backend and the minimal script.
Writes every measurement to ``bench/results/libraries-<time>.json`` and prints the table of docs/results/benchmarks.md;
``--table FILE`` prints the table of such a file again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from bench.reference_libraries import run_reference
from queues.backends.options import options_from_pairs
from queues.faults.injectors import Faults
from queues.run.launch import build_backend, server_url
from queues.run.runner import Runner
from queues.workload.spec import WorkloadSpec

#: library backend -> the raw backend on the same server
RAW = {
    "celery-redis": "redis-list",
    "celery-rabbitmq": "rabbitmq",
    "dramatiq-redis": "redis-list",
    "dramatiq-rabbitmq": "rabbitmq",
    "rq": "redis-list",
    "huey": "redis-list",
    "procrastinate": "postgres",
    "django-q2-orm": "postgres",
    "django-q2-redis": "redis-list",
}
#: Below about 500 tasks/s here: ``--slow-events`` of them per run; django-q2's ORM broker
#: (about 50 tasks/s): ``--orm-events``.
SLOW = {"rq", "dramatiq-redis", "procrastinate"}
VERY_SLOW = {"django-q2-orm"}
BATCH = 100  # messages per send call (the engine's producer enqueues them one task each)
KILL_EVENTS = 2_000


def engine(
    alias: str, events: int, workers: int, faults: Faults | None = None, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    backend = build_backend(alias, urls=os.environ, namespace="imqbench", options=options)
    spec = WorkloadSpec(backend=alias, events=events, consumers=workers, batch=BATCH, idle_timeout_s=10)
    result = Runner(spec, backend, run_id=uuid.uuid4().hex[:8], faults=faults).run()
    s = result.summary
    return {
        "seconds": s["duration_s"],
        "events_per_s": s["throughput_eps"],
        "status": result.status,
        "verdict": s["verdict"],
        "lost": s["lost"],
        "duplicates": s["duplicates"],
        "error": result.error,
        "p50_ms": s["latency_ms"]["p50"],
        "p99_ms": s["latency_ms"]["p99"],
    }


def median(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 1)


def measure(alias: str, events: int, workers: int, repeat: int, options: dict[str, Any]) -> dict[str, Any]:
    url = server_url(alias, os.environ)
    imq, ref, raw = [], [], []
    for _ in range(repeat):  # alternated: engine, reference, raw
        imq.append(engine(alias, events, workers, options=options))
        ref.append(run_reference(alias, url, events, workers, options))
        raw.append(engine(RAW[alias], events, workers))
    row = {
        "library": alias,
        "workers": workers,
        "events": events,
        "options": options,
        "eps": median(imq, "events_per_s"),
        "p50_ms": median(imq, "p50_ms"),
        "p99_ms": median(imq, "p99_ms"),
        "ref_eps": median(ref, "events_per_s"),
        "raw": RAW[alias],
        "raw_eps": median(raw, "events_per_s"),
        "verdicts": sorted({r["verdict"] for r in imq}),
        "runs": {"engine": imq, "reference": ref, "raw": raw},
    }
    row["overhead"] = round(row["ref_eps"] / row["eps"] - 1, 3) if row["eps"] else None
    row["ratio_to_raw"] = round(row["eps"] / row["raw_eps"], 4) if row["raw_eps"] else None
    return row


def kill_verdict(alias: str, options: dict[str, Any]) -> dict[str, Any]:
    run = engine(alias, KILL_EVENTS, 2, Faults(kill_consumer_after=KILL_EVENTS // 4), options)
    return {"library": alias, **{k: run[k] for k in ("status", "verdict", "lost", "duplicates", "error")}}


BROKERS = {"redis-list": "Redis", "rabbitmq": "RabbitMQ", "postgres": "PostgreSQL"}


def markdown(rows: list[dict[str, Any]], kills: list[dict[str, Any]]) -> str:
    """The table of one benchmark's rows, as docs/results/benchmarks.md shows it."""
    verdicts = {k["library"]: f"{k['verdict']} (lost {k['lost']}, duplicates {k['duplicates']})" for k in kills}
    lines = [
        "| library | broker | workers | events | events/s | p50 ms | p99 ms | minimal script events/s | "
        "harness overhead | raw backend events/s | ratio to raw | verdict under SIGKILL |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        broker = BROKERS[row["raw"]] + (" (ORM)" if row["library"] == "django-q2-orm" else "")
        overhead = f"{row['overhead']:+.0%}" if row["overhead"] is not None else "n/a"
        lines.append(
            f"| `{row['library']}` | {broker} | {row['workers']} | {row['events']:,} | {row['eps']:,.0f} | "
            f"{row['p50_ms']:,.0f} | {row['p99_ms']:,.0f} | {row['ref_eps']:,.0f} | {overhead} | "
            f"`{row['raw']}` {row['raw_eps']:,.0f} | {row['ratio_to_raw']:.4f} | {verdicts.get(row['library'], '')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--slow-events", type=int, default=20_000, help="events per run of the libraries in SLOW")
    parser.add_argument("--orm-events", type=int, default=20_000, help="events per run of django-q2-orm")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--only", default="", help="comma-separated library backends")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a backend option for the engine and the minimal script, e.g. prompt_hub=false",
    )
    parser.add_argument("--table", type=Path, help="print the table of this results file, and run nothing")
    args = parser.parse_args()
    options = options_from_pairs(args.option)
    if args.table:
        results = json.loads(args.table.read_text())
        print(markdown(results["rows"], results["kills"]))
        return
    libraries = [a for a in RAW if not args.only or a in args.only.split(",")]
    rows, kills = [], []
    for alias in libraries:
        events = args.orm_events if alias in VERY_SLOW else args.slow_events if alias in SLOW else args.events
        for workers in (int(w) for w in args.workers.split(",")):
            row = measure(alias, events, workers, args.repeat, options)
            rows.append(row)
            print(
                f"{alias:18} w={workers} n={events:>6}  {row['eps']:>8.0f} ev/s  p50 {row['p50_ms']:>8.1f} ms  "
                f"p99 {row['p99_ms']:>8.1f} ms  ref {row['ref_eps']:>8.0f} ev/s  overhead {row['overhead']:+.1%}  "
                f"{row['raw']} {row['raw_eps']:>9.0f} ev/s  ratio {row['ratio_to_raw']:.4f}  {row['verdicts']}",
                flush=True,
            )
        kills.append(kill_verdict(alias, options))
        print(f"{alias:18} SIGKILL of consumer 0: {kills[-1]}", flush=True)
    out = Path(__file__).parent / "results" / f"libraries-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "kills": kills, "args": vars(args)}, indent=1))
    print(markdown(rows, kills))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
