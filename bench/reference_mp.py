"""The minimal reference for the in-memory benchmark: one producer process sends the integers
1..N in lists of 1000 through a ``multiprocessing.Queue``; one consumer process sums them.

Timed like the engine: from the moment both processes are up until the consumer has the sum.
Prints one JSON object: ``{"events", "seconds", "events_per_s", "sum_ok"}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time

BATCH = 1000


def produce(q, start, n):
    start.wait()
    for lo in range(1, n + 1, BATCH):
        q.put(list(range(lo, min(lo + BATCH, n + 1))))
    q.put(None)


def consume(q, start, out):
    start.wait()
    total = 0
    while (chunk := q.get()) is not None:
        total += sum(chunk)
    out.put((time.perf_counter(), total))


def run(n: int) -> dict:
    ctx = multiprocessing.get_context("fork")
    q, out, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=produce, args=(q, start, n)), ctx.Process(target=consume, args=(q, start, out))]
    for p in procs:
        p.start()
    time.sleep(0.2)  # both processes up and waiting
    began = time.perf_counter()
    start.set()
    finished, total = out.get()
    for p in procs:
        p.join()
    seconds = finished - began
    return {
        "events": n,
        "seconds": round(seconds, 4),
        "events_per_s": round(n / seconds),
        "sum_ok": total == n * (n + 1) // 2,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=float, default=1e6)
    print(json.dumps(run(int(parser.parse_args().events))))
