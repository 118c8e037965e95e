"""SQL-table queue benchmark: postgres, postgres-notify and mysql through the engine
(``queues.run.runner.Runner``, no Django), beside the minimal reference ``reference_postgres.py``
measured in the same run.

Sections (``--only`` picks some):
- ``throughput``: 1 producer, 2 consumers, ``--events`` (1e6) events, one event per message,
  default batch (1000); the reference runs first in every repeat. Target: postgres >= 0.7x.
- ``insert``: producer only, ``--insert-events`` rows in batches of 1000, for each Postgres
  insert method (copy, unnest, executemany) and MySQL's multi-row INSERT.
- ``batch1``: one event per call and per transaction (``batch=1``), ``--batch1-events`` events,
  with the round trips per event counted by strace (``sendto`` calls of a producer sending and
  a consumer receiving+acking 200 events one by one) when strace is installed.
- ``latency``: a slow steady flow (the engine's open-loop schedule: 200 events/s for 10 s,
  1 producer, 1 consumer): end-to-end latency of postgres-notify against polling consumers at
  their default interval, and the database server's CPU meanwhile (its load). Target: notify
  p50 < 5 ms, polling p50 >= 4x that.

Usage: ``PYTHONPATH=. .venv/bin/python bench/bench_sql.py [--repeat 3] [--only throughput]``.
Prints a table of medians and writes every measurement to ``bench/results/sql-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from queues.run.launch import build_backend
from queues.run.runner import Runner
from queues.workload.events import encode_events, split_messages
from queues.workload.spec import WorkloadSpec

HERE = Path(__file__).resolve().parent
SECTIONS = ("throughput", "insert", "batch1", "latency")
ROUND_TRIP_EVENTS = 200


def engine_run(alias: str, **fields) -> dict:
    """One run through the engine; the summary plus the backend's environment record."""
    backend = build_backend(alias, urls=os.environ, namespace="imqbench")
    spec = WorkloadSpec(backend=alias, **fields)
    result = Runner(spec, backend, run_id=uuid.uuid4().hex[:8]).run()
    if result.status != "succeeded" or result.summary["verdict"] != "exact":
        raise SystemExit(f"{alias} run {result.status}: {result.error or result.summary['verdict']}")
    return {**result.summary, "backend_environment": result.environment["backend"]}


def reference(events: int) -> dict:
    out = subprocess.run(
        [sys.executable, str(HERE / "reference_postgres.py"), "--events", str(events)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def packed_batches(events: int, batch: int) -> list:
    seq = np.arange(events, dtype=np.int64)
    messages = split_messages(encode_events(0, seq, seq + 1, 0, 0), 1)
    return [messages[i : i + batch] for i in range(0, events, batch)]


def insert_rate(alias: str, events: int, **options) -> float:
    """Rows/s of one producer alone, batches of 1000, encoding done before the clock starts."""
    backend = build_backend(alias, urls=os.environ, options=options, namespace="imqbench")
    queue = f"imqbench.ins{uuid.uuid4().hex[:8]}"
    backend.connect()
    backend.declare(queue)
    try:
        batches = packed_batches(events, 1000)
        producer = backend.producer(queue)
        began = time.perf_counter()
        for batch in batches:
            producer.send_batch(batch)
        seconds = time.perf_counter() - began
        producer.close()
        assert backend.depth(queue) == events
        return events / seconds
    finally:
        backend.delete(queue)
        backend.close()


# -- round trips (strace) ------------------------------------------------------------------


def count_round_trips_child(alias: str, role: str) -> None:
    """Runs under strace: sends or receives+acks ``ROUND_TRIP_EVENTS`` events one at a time,
    writing markers to stderr around the measured part."""
    backend = build_backend(alias, urls=os.environ, namespace="imqbench")
    queue = f"imqbench.rt{uuid.uuid4().hex[:8]}"
    backend.connect()
    backend.declare(queue)
    messages = packed_batches(ROUND_TRIP_EVENTS, ROUND_TRIP_EVENTS)[0]
    producer, consumer = backend.producer(queue), backend.consumer(queue)
    if role == "consume":
        producer.send_batch(messages)
    os.write(2, b"#MARK-START\n")
    if role == "produce":
        for message in messages:
            producer.send(message)
    else:
        got = 0
        while got < ROUND_TRIP_EVENTS:
            batch = consumer.receive_batch(1, 1.0)
            consumer.ack(batch)
            got += len(batch)
    os.write(2, b"#MARK-END\n")
    producer.close()
    consumer.close()
    backend.delete(queue)
    backend.close()


def round_trips(alias: str, role: str) -> float | None:
    """``sendto`` calls per event between the markers: each is one request to the server."""
    if not shutil.which("strace"):
        return None
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as trace:
        subprocess.run(
            [
                "strace",
                "-f",
                "-e",
                "trace=sendto,write",
                "-o",
                trace.name,
                sys.executable,
                __file__,
                "--count-round-trips",
                alias,
                role,
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(HERE.parent)},
        )
        inside, sends = False, 0
        for line in trace:
            if "#MARK-START" in line:
                inside = True
            elif "#MARK-END" in line:
                inside = False
            elif inside and "sendto(" in line:
                sends += 1
    return round(sends / ROUND_TRIP_EVENTS, 2)


# -- sections ------------------------------------------------------------------------------


def section_throughput(args) -> dict:
    rows: dict[str, list] = {"reference": [], "postgres": [], "postgres-notify": [], "mysql": []}
    for _ in range(args.repeat):
        rows["reference"].append(reference(args.events))
        for alias in ("postgres", "postgres-notify", "mysql"):
            rows[alias].append(engine_run(alias, events=args.events, producers=1, consumers=2, events_per_message=1))
    ref = [r["events_per_s"] for r in rows["reference"]]
    figures = {"reference": {"events_per_s": ref}}
    for alias in ("postgres", "postgres-notify", "mysql"):
        eps = [r["throughput_eps"] for r in rows[alias]]
        figures[alias] = {
            "events_per_s": eps,
            "vs_reference": [round(e / r, 3) for e, r in zip(eps, ref, strict=True)],
            "p50_ms": [r["latency_ms"]["p50"] for r in rows[alias]],
            "environment": rows[alias][-1]["backend_environment"],
        }
    return figures


def section_insert(args) -> dict:
    figures: dict[str, list] = {}
    for _ in range(args.repeat):
        for method in ("copy", "unnest", "executemany"):
            figures.setdefault(f"postgres insert={method}", []).append(
                insert_rate("postgres", args.insert_events, insert=method)
            )
        figures.setdefault("mysql multi-row INSERT", []).append(insert_rate("mysql", args.insert_events))
    return {name: {"rows_per_s": [round(v) for v in values]} for name, values in figures.items()}


def section_batch1(args) -> dict:
    figures = {}
    for alias in ("postgres", "mysql"):
        runs = [
            engine_run(alias, events=args.batch1_events, producers=1, consumers=2, batch=1) for _ in range(args.repeat)
        ]
        figures[alias] = {
            "events_per_s": [r["throughput_eps"] for r in runs],
            "round_trips_per_event": {
                "produce": round_trips(alias, "produce"),
                "consume+ack": round_trips(alias, "consume"),
            },
        }
    return figures


SERVER_PROCESS = {"postgres": "postgres", "postgres-notify": "postgres", "mysql": "mariadbd"}


def server_cpu_s(command: str) -> float:
    """CPU seconds used so far by every process named ``command`` (the database server),
    with the time of their exited children (Postgres runs a process per connection, and a run's
    connections are gone before it ends: the postmaster's ``cutime`` keeps their time)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if name == command:
            total += sum(int(x) for x in rest[11:15])  # utime, stime, cutime, cstime
    return total / ticks


def section_latency(args) -> dict:
    figures: dict[str, dict] = {}
    for _ in range(args.repeat):
        for alias in ("postgres-notify", "postgres", "mysql"):
            cpu_before, began = server_cpu_s(SERVER_PROCESS[alias]), time.monotonic()
            summary = engine_run(alias, rate_eps=200, duration_s=10, producers=1, consumers=1)
            server_load = (server_cpu_s(SERVER_PROCESS[alias]) - cpu_before) / (time.monotonic() - began)
            entry = figures.setdefault(alias, {"p50_ms": [], "p99_ms": [], "max_ms": [], "server_cpu_share": []})
            entry["server_cpu_share"].append(round(server_load, 4))
            entry["p50_ms"].append(summary["latency_ms"]["p50"])
            entry["p99_ms"].append(summary["latency_ms"]["p99"])
            entry["max_ms"].append(summary["latency_ms"]["max"])
            entry["wait"] = {k: v for k, v in summary["backend_environment"].items() if "poll" in k or "wait" in k}
    return figures


# -- report --------------------------------------------------------------------------------


def med(values: list) -> float:
    return statistics.median(values)


def print_table(results: dict) -> None:
    t = results.get("throughput")
    if t:
        print(
            f"\nthroughput: 1 producer, 2 consumers, {results['args']['events']:.0f} events, batch 1000 "
            f"(median of {results['args']['repeat']})"
        )
        print(f"  {'reference_postgres.py':24} {med(t['reference']['events_per_s']):>10,.0f} ev/s")
        for alias in ("postgres", "postgres-notify", "mysql"):
            f = t[alias]
            print(
                f"  {alias:24} {med(f['events_per_s']):>10,.0f} ev/s  {med(f['vs_reference']):.2f}x reference  "
                f"p50 {med(f['p50_ms']):.0f} ms"
            )
    if results.get("insert"):
        print(f"\ninsert, producer alone, {results['args']['insert_events']:.0f} rows in batches of 1000")
        for name, f in results["insert"].items():
            print(f"  {name:32} {med(f['rows_per_s']):>10,.0f} rows/s")
    if results.get("batch1"):
        print(
            f"\nbatch=1 (one event per call and per transaction), {results['args']['batch1_events']:.0f} events, "
            "2 consumers"
        )
        for alias, f in results["batch1"].items():
            rt = f["round_trips_per_event"]
            print(
                f"  {alias:16} {med(f['events_per_s']):>8,.0f} ev/s  round trips/event: "
                f"produce {rt['produce']}, consume+ack {rt['consume+ack']}"
            )
    if results.get("latency"):
        print("\nslow steady flow: 200 events/s for 10 s, 1 consumer (end-to-end latency, ms)")
        for alias, f in results["latency"].items():
            print(
                f"  {alias:16} p50 {med(f['p50_ms']):7.2f}  p99 {med(f['p99_ms']):7.2f}  max {med(f['max_ms']):7.2f}  "
                f"server CPU {med(f['server_cpu_share']):.1%} of a core  {f['wait']}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--events", type=float, default=1e6)
    parser.add_argument("--insert-events", type=float, default=2e5)
    parser.add_argument("--batch1-events", type=float, default=10_000)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--count-round-trips", nargs=2, metavar=("ALIAS", "ROLE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count_round_trips:
        count_round_trips_child(*args.count_round_trips)
        return
    args.events, args.insert_events, args.batch1_events = (
        int(args.events),
        int(args.insert_events),
        int(args.batch1_events),
    )
    results: dict = {"args": vars(args), "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpu_count": os.cpu_count()}
    for name in args.only.split(","):
        results[name] = globals()[f"section_{name}"](args)
    out = HERE / "results" / f"sql-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print_table(results)
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
