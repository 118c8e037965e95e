"""Broker benchmark: the redis-list, redis-list-noack, redis-stream and rabbitmq backends through
the engine (``queues.run.runner.Runner``, no Django), each beside a minimal reference script for the
same broker measured in the same run.

References (one producer process, one consumer process, timed from start until the consumer
has the sum, like ``reference_mp.py``):
- redis list: ``RPUSH`` of 1000 values per call; ``LPOP key 1000``.
- redis stream: ``XADD`` pipelined 1000 per round trip; ``XREADGROUP COUNT 1000`` + ``XACK``.
- rabbitmq: pika without confirms, the frames of 1000 publishes flushed together; consuming
  with prefetch 1000 and one ``multiple`` ack per delivery burst.

Usage: ``PYTHONPATH=. .venv/bin/python bench/bench_brokers.py [--repeat 3] [--events 1e6]
[--only redis-list] [--workload "epm=1 n"] [--option prefetch=false] [--profile-dir /tmp/prof]``.
Prints a table of medians and writes every measurement to ``bench/results/brokers-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
import uuid
from pathlib import Path

import pika
import redis

from queues.run.launch import build_backend, server_url
from queues.run.runner import Runner
from queues.workload.spec import WorkloadSpec

BATCH = 1000
#: Round trips per event with batch=1 (one message a call), by how each backend talks:
#: send + receive + ack; RabbitMQ publishes and acks without waiting, deliveries are pushed.
ROUND_TRIPS_BATCH1 = {
    "redis-list": "2 (RPUSH, take script; the ack LTRIM rides on the next take)",
    "redis-list-noack": "2 (RPUSH, LPOP)",
    "redis-stream": "3 (XADD, XREADGROUP, XACK)",
    "rabbitmq": "0 waited (publish, push delivery and ack are one-way; confirms=message adds 1)",
    "rabbitmq confirms=message": "1 (the confirm)",
}


def backend_url(alias: str) -> str:
    """The server the engine runs of ``alias`` use (``IMQ_*_URL`` or the default), for the
    reference scripts to use the same one."""
    return server_url(alias, os.environ)


# -- references ----------------------------------------------------------------------------


def _timed(produce, consume, n: int) -> float:
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=produce, args=(start, n)),
        ctx.Process(target=lambda s, n: out.put(consume(s, n)), args=(start, n)),
    ]
    for p in procs:
        p.start()
    time.sleep(0.3)
    began = time.perf_counter()
    start.set()
    finished, total = out.get()
    for p in procs:
        p.join()
    assert total == n * (n + 1) // 2, "reference sum is wrong"
    return finished - began


def ref_redis_list(n: int) -> float:
    key = f"{{imqbench-{uuid.uuid4().hex[:8]}}}:ref"
    url = backend_url("redis-list")

    def produce(start, n):
        r = redis.Redis.from_url(url)
        start.wait()
        for lo in range(1, n + 1, BATCH):
            r.rpush(key, *range(lo, min(lo + BATCH, n + 1)))

    def consume(start, n):
        r = redis.Redis.from_url(url)
        start.wait()
        total = got = 0
        while got < n:
            items = r.lpop(key, BATCH)
            if items:
                got += len(items)
                total += sum(map(int, items))
        return time.perf_counter(), total

    try:
        return _timed(produce, consume, n)
    finally:
        redis.Redis.from_url(url).delete(key)


def ref_redis_stream(n: int) -> float:
    key = f"{{imqbench-{uuid.uuid4().hex[:8]}}}:ref"
    url = backend_url("redis-stream")
    redis.Redis.from_url(url).xgroup_create(key, "g", id="0", mkstream=True)

    def produce(start, n):
        r = redis.Redis.from_url(url)
        start.wait()
        for lo in range(1, n + 1, BATCH):
            pipe = r.pipeline(transaction=False)
            for v in range(lo, min(lo + BATCH, n + 1)):
                pipe.xadd(key, {"v": v})
            pipe.execute()

    def consume(start, n):
        r = redis.Redis.from_url(url)
        start.wait()
        total = got = 0
        while got < n:
            reply = r.xreadgroup("g", "c", {key: ">"}, count=BATCH, block=100)
            if not reply:
                continue
            entries = reply[key.encode()][0] if isinstance(reply, dict) else reply[0][1]
            r.xack(key, "g", *[e[0] for e in entries])
            got += len(entries)
            total += sum(int(e[1][b"v"]) for e in entries)
        return time.perf_counter(), total

    try:
        return _timed(produce, consume, n)
    finally:
        redis.Redis.from_url(url).delete(key)


def ref_rabbitmq(n: int) -> float:
    queue = f"imqbench-{uuid.uuid4().hex[:8]}"
    params = pika.URLParameters(backend_url("rabbitmq"))
    with pika.BlockingConnection(params) as conn:
        conn.channel().queue_declare(queue)

    def produce(start, n):
        conn = pika.BlockingConnection(params)
        channel = conn.channel()
        start.wait()
        for lo in range(1, n + 1, BATCH):
            for v in range(lo, min(lo + BATCH, n + 1)):
                channel._impl.basic_publish("", queue, str(v).encode())  # frames buffered
            conn.process_data_events(0)  # one flush per 1000 publishes
        conn.close()

    def consume(start, n):
        conn = pika.BlockingConnection(params)
        channel = conn.channel()
        channel.basic_qos(prefetch_count=BATCH)
        state = {"got": 0, "total": 0, "tag": 0}

        def on_message(_ch, method, _props, body):
            state["got"] += 1
            state["total"] += int(body)
            state["tag"] = method.delivery_tag

        channel.basic_consume(queue, on_message)
        start.wait()
        while state["got"] < n:
            conn.process_data_events(time_limit=0.1)
            if state["tag"]:
                channel.basic_ack(state["tag"], multiple=True)
                state["tag"] = 0
        finished = time.perf_counter()
        conn.close()
        return finished, state["total"]

    try:
        return _timed(produce, consume, n)
    finally:
        with pika.BlockingConnection(params) as conn:
            conn.channel().queue_delete(queue)


REFERENCES = {"redis-list": ref_redis_list, "redis-stream": ref_redis_stream, "rabbitmq": ref_rabbitmq}


# -- the engine ----------------------------------------------------------------------------

#: Where ``--profile-dir`` asks the engine runs to write a cProfile per worker (None: no profile).
PROFILE_DIR: str | None = None
#: Backend options from ``--option name=value``, given to every engine run (to compare settings).
EXTRA_OPTIONS: dict[str, str] = {}


def engine(alias: str, events: int, *, epm: int = 1, batch: int = BATCH, **options) -> dict:
    backend = build_backend(alias, urls=os.environ, options={**EXTRA_OPTIONS, **options}, namespace="imqbench")
    spec = WorkloadSpec(backend=alias, events=events, events_per_message=epm, batch=batch, idle_timeout_s=10)
    profile_dir = None
    if PROFILE_DIR:
        profile_dir = Path(PROFILE_DIR) / f"{alias}-epm{epm}-b{batch}-{uuid.uuid4().hex[:6]}"
        profile_dir.mkdir(parents=True, exist_ok=True)
    result = Runner(
        spec, backend, run_id=uuid.uuid4().hex[:8], profile_dir=str(profile_dir) if profile_dir else None
    ).run()
    s = result.summary
    return {
        "seconds": s["duration_s"],
        "events_per_s": s["throughput_eps"],
        "status": result.status,
        "verdict": s["verdict"],
        "lost": s["lost"],
        "duplicates": s["duplicates"],
        "error": result.error,
        "publish_p50_ms": s["publish_ms"]["p50"],
        "latency_p50_ms": s["latency_ms"]["p50"],
    }


def median_of(fn, repeat: int) -> dict:
    runs = [fn() for _ in range(repeat)]
    seconds = statistics.median(r["seconds"] for r in runs)
    return {
        "median_seconds": round(seconds, 4),
        "median_events_per_s": round(statistics.median(r["events_per_s"] for r in runs)),
        "runs": runs,
    }


def reference(alias: str, events: int) -> dict:
    seconds = REFERENCES[alias](events)
    return {"seconds": seconds, "events_per_s": events / seconds}


def cases(args) -> list[tuple[str, str, callable]]:
    n, rabbit_n = int(args.events), int(args.rabbit_events)
    out = []
    for alias, ref, count in (
        ("redis-list", "redis-list", n),
        ("redis-list-noack", None, n),
        ("redis-stream", "redis-stream", n),
        ("rabbitmq", "rabbitmq", rabbit_n),
    ):
        if ref:
            out.append((f"reference {ref}", f"epm=1 n={count}", lambda r=ref, c=count: reference(r, c)))
        out.append((alias, f"epm=1 n={count}", lambda a=alias, c=count: engine(a, c)))
    for confirms in ("batch", "message"):
        c = rabbit_n if confirms == "batch" else args.batch1_events
        out.append(
            (
                f"rabbitmq confirms={confirms}",
                f"epm=1 n={c}",
                lambda cf=confirms, c=c: engine("rabbitmq", c, confirms=cf),
            )
        )
    out.append(
        ("rabbitmq queue_type=quorum", f"epm=1 n={rabbit_n}", lambda: engine("rabbitmq", rabbit_n, queue_type="quorum"))
    )
    for alias in ("redis-list", "redis-list-noack", "redis-stream", "rabbitmq"):
        out.append((alias, f"epm=1000 n={n}", lambda a=alias: engine(a, n, epm=1000, batch=10)))
    for alias in ("redis-list", "redis-list-noack", "redis-stream", "rabbitmq"):
        b1 = args.batch1_events
        out.append((alias, f"batch=1 n={b1}", lambda a=alias, b1=b1: engine(a, b1, batch=1)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=float, default=1e6)
    parser.add_argument("--rabbit-events", type=float, default=2e5)
    parser.add_argument("--batch1-events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="", help="substring of the case names to run")
    parser.add_argument("--workload", default="", help="substring of the workloads to run (epm=1 n, batch=1 ...)")
    parser.add_argument("--profile-dir", default="", help="write a cProfile of each engine worker under this folder")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a backend option for every engine run (repeatable), e.g. prefetch=false",
    )
    args = parser.parse_args()
    global PROFILE_DIR
    PROFILE_DIR = args.profile_dir or None
    EXTRA_OPTIONS.update(option.split("=", 1) for option in args.option)
    results = []
    print(f"{'case':34} {'workload':20} {'median s':>9} {'events/s':>11}  runs (events/s)")
    for name, workload, fn in cases(args):
        if args.only and args.only not in f"{name} {workload}":
            continue
        if args.workload and args.workload not in workload:
            continue
        row = {"case": name, "workload": workload, **median_of(fn, args.repeat)}
        if "batch=1 " in workload:
            row["round_trips_per_event"] = ROUND_TRIPS_BATCH1.get(name)
        results.append(row)
        runs = ", ".join(
            f"{r['events_per_s']:.0f}" + ("" if r.get("verdict", "exact") == "exact" else f" ({r['verdict']})")
            for r in row["runs"]
        )
        print(
            f"{name:34} {workload:20} {row['median_seconds']:9.3f} {row['median_events_per_s']:11,}  {runs}", flush=True
        )
    out = Path(__file__).parent / "results" / f"brokers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
