"""The minimal reference for the Postgres queue benchmark, with no engine at all.

One producer process COPYs the integers 1..N into a table in chunks of 1000 rows (one COPY
statement, so one commit, per chunk: consumers see rows as they arrive); two consumer processes
each loop on ``DELETE ... WHERE id IN (SELECT id ... FOR UPDATE SKIP LOCKED LIMIT 1000)
RETURNING value`` in autocommit and add the values up, until all N are summed.

Timed like the engine: from the moment every process is connected and waiting until the last
consumer has the total. Prepared statements are off (``prepare_threshold=None``) so the
reference does not fall into the cached-plan pitfall (``queues/backends/postgres.py`` says which). The table is its
own (``imq_reference_<random>``) and dropped at the end.

Prints one JSON object: ``{"events", "seconds", "events_per_s", "sum_ok"}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
import uuid

import psycopg
from psycopg import sql

URL = os.environ.get("IMQ_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CHUNK = 1000
CONSUMERS = 2


def produce(table: str, start, n: int) -> None:
    with psycopg.connect(URL, autocommit=True) as conn:
        copy_sql = sql.SQL("COPY {} (value) FROM STDIN").format(sql.Identifier(table))
        start.wait()
        for lo in range(1, n + 1, CHUNK):
            with conn.cursor().copy(copy_sql) as copy:
                copy.write("".join(f"{v}\n" for v in range(lo, min(lo + CHUNK, n + 1))))


def consume(table: str, start, remaining, out) -> None:
    with psycopg.connect(URL, autocommit=True, prepare_threshold=None) as conn:
        claim = sql.SQL(
            "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING value"
        ).format(t=sql.Identifier(table))
        cur = conn.cursor()
        total = 0
        start.wait()
        while remaining.value > 0:
            rows = cur.execute(claim, (CHUNK,)).fetchall()
            if not rows:
                continue  # the reference spins: it is the best case, not a polite consumer
            total += sum(row[0] for row in rows)
            with remaining.get_lock():
                remaining.value -= len(rows)
        out.put((time.perf_counter(), total))


def run(n: int) -> dict:
    table = f"imq_reference_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(URL, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, value bigint NOT NULL)").format(sql.Identifier(table))
        )
        try:
            return _timed(table, n)
        finally:
            admin.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def _timed(table: str, n: int) -> dict:
    ctx = multiprocessing.get_context("fork")
    start, out, remaining = ctx.Event(), ctx.Queue(), ctx.Value("q", n)
    procs = [ctx.Process(target=produce, args=(table, start, n))]
    procs += [ctx.Process(target=consume, args=(table, start, remaining, out)) for _ in range(CONSUMERS)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # every process connected and waiting
    began = time.perf_counter()
    start.set()
    results = [out.get() for _ in range(CONSUMERS)]
    for p in procs:
        p.join()
    seconds = max(t for t, _ in results) - began
    total = sum(s for _, s in results)
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
