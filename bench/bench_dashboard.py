"""What watching costs. The product runs as a user runs it: daphne and a real
``qcluster`` on a SQLite database of the bench's own, runs launched with ``launchrun``.

Sections (one per process):
- ``overhead``: a 1e6-event ``memory-mp`` burst, alone or with its live page open in headless
  Chromium and ``/metrics`` scraped every second, alternated ``--repeat`` times (5). Compares
  the runs' drain time and their wall time (start to end, as stored). Target: watched <= 1.05x
  alone, medians.
- ``viewers``: a steady ``memory-mp`` run at 20,000 events/s for ``--duration`` s, alone or
  with 50 websocket viewers, alternated ``--repeat`` times (3). For each viewer and sample, the
  delay from the end of the sample's interval to its arrival. Targets: every sample within
  1.5 s, and the run's figures (consume rate, p99) within noise of a run with no viewer.

The interval's end is taken as the run's ``started_at`` + ``t_s``: the runner's clock starts
after the workers are up, which is later than ``started_at``, so the delays are upper bounds.

Usage: ``PYTHONPATH=. .venv/bin/python bench/bench_dashboard.py overhead|viewers [--repeat N]``
(needs the test extra: Playwright, websockets, and Debian's chromium).
Writes every measurement to ``bench/results/dashboard-<section>-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import sqlite3
import statistics
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from bench.product import PASSWORD, Product

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
CHROMIUM = os.environ.get("IMQ_CHROMIUM", "/usr/bin/chromium")


def parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def wall_s(row: dict) -> float:
    return parse_time(row["finished_at"]) - parse_time(row["started_at"])


class Scraper(threading.Thread):
    """GET /metrics every second until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stopped, self.scrapes = url, threading.Event(), 0

    def run(self) -> None:
        while not self.stopped.is_set():
            with urllib.request.urlopen(self.url, timeout=10) as response:
                response.read()
            self.scrapes += 1
            self.stopped.wait(1.0)


def overhead(product: Product, repeat: int) -> dict:
    from playwright.sync_api import sync_playwright

    product.define("bench-watch", backend="memory-mp", events=1_000_000)
    rows: dict[str, list[dict]] = {"alone": [], "watched": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page()
        page.goto(product.url("/admin/login/"))
        page.fill("#id_username", "bench")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        for i in range(repeat):
            for mode in ("alone", "watched") if i % 2 == 0 else ("watched", "alone"):
                scraper = None
                run_id = product.launch("bench-watch")
                if mode == "watched":
                    scraper = Scraper(product.url("/metrics"))
                    scraper.start()
                    page.goto(product.url(f"/dashboard/runs/{run_id}/"))
                row = product.wait(run_id)
                if mode == "watched":
                    page.wait_for_function("() => document.body.dataset.state === 'ended'", timeout=60_000)
                    scraper.stopped.set()
                    scraper.join()
                summary = json.loads(row["summary"])
                assert summary["verdict"] == "exact", summary
                rows[mode].append(
                    {
                        "run_id": run_id,
                        "drain_s": summary["duration_s"],
                        "wall_s": wall_s(row),
                        "scrapes": scraper.scrapes if scraper else 0,
                    }
                )
                print(
                    f"  {mode:<8} run {run_id}: drain {summary['duration_s']:.3f} s, wall {wall_s(row):.3f} s",
                    flush=True,
                )
        browser.close()
    result = {"rows": rows}
    for key in ("drain_s", "wall_s"):
        alone = statistics.median(r[key] for r in rows["alone"])
        watched = statistics.median(r[key] for r in rows["watched"])
        result[key] = {"alone": alone, "watched": watched, "ratio": watched / alone}
        print(f"  median {key}: alone {alone:.3f} s, watched {watched:.3f} s: {watched / alone:.3f}x", flush=True)
    return result


async def _viewers(product: Product, run_id: int, count: int, cookie: str) -> list[list[tuple[float, float]]]:
    """``count`` sockets on the run's page until it ends: per viewer, (t_s, arrival) pairs."""
    from websockets.asyncio.client import connect

    async def view() -> list[tuple[float, float]]:
        got: list[tuple[float, float]] = []
        async with connect(
            f"ws://127.0.0.1:{product.port}/ws/runs/{run_id}/",
            max_size=2**24,
            additional_headers={"Cookie": cookie, "Origin": product.url("")},
        ) as ws:
            async for raw in ws:
                arrival = time.time()
                message = json.loads(raw)
                got += [(t, arrival) for t in (message.get("columns") or {}).get("t_s", [])]
                if (message.get("run") or {}).get("ended"):
                    return got
        return got

    return await asyncio.gather(*(view() for _ in range(count)))


def login_cookie(product: Product) -> str:
    import http.cookiejar

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(product.url("/admin/login/")).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode({"username": "bench", "password": PASSWORD, "csrfmiddlewaretoken": token}).encode()
    opener.open(
        urllib.request.Request(
            product.url("/admin/login/?next=/admin/"), data=body, headers={"Referer": product.url("/admin/login/")}
        )
    ).read()
    return "; ".join(f"{c.name}={c.value}" for c in jar)


def viewers(product: Product, repeat: int, count: int, duration_s: float) -> dict:
    product.define("bench-viewers", backend="memory-mp", rate_eps=20_000.0, duration_s=duration_s, warmup_s=1.0)
    cookie = login_cookie(product)
    rows: dict[str, list[dict]] = {"alone": [], "viewed": []}
    for i in range(repeat):
        for mode in ("alone", "viewed") if i % 2 == 0 else ("viewed", "alone"):
            run_id = product.launch("bench-viewers")
            delays: list[float] = []
            missing = 0
            if mode == "viewed":
                seen = asyncio.run(_viewers(product, run_id, count, cookie))
            row = product.wait(run_id)
            summary = json.loads(row["summary"])
            if mode == "viewed":
                start = parse_time(row["started_at"])
                with sqlite3.connect(product.db) as conn:
                    stored = [
                        r[0]
                        for r in conn.execute(
                            "SELECT t_s FROM experiments_sample WHERE run_id = ? ORDER BY t_s", (run_id,)
                        )
                    ]
                for got in seen:
                    missing += len(set(stored) - {t for t, _ in got})
                    delays += [arrival - (start + t) for t, arrival in got]
            rows[mode].append(
                {
                    "run_id": run_id,
                    "consume_eps": summary["consume_eps"],
                    "p99_ms": summary["latency_ms"]["p99"],
                    "verdict": summary["verdict"],
                    "max_delay_s": max(delays) if delays else None,
                    "p99_delay_s": statistics.quantiles(delays, n=100)[98] if len(delays) > 100 else None,
                    "missing": missing,
                }
            )
            r = rows[mode][-1]
            extra = (
                f", delay max {r['max_delay_s']:.3f} s p99 {r['p99_delay_s']:.3f} s, {missing} missing"
                if mode == "viewed"
                else ""
            )
            print(
                f"  {mode:<7} run {run_id}: consumed {r['consume_eps']:,.0f}/s, p99 {r['p99_ms']:.3f} ms, "
                f"{r['verdict']}{extra}",
                flush=True,
            )
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=("overhead", "viewers"))
    parser.add_argument("--repeat", type=int)
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--duration", type=float, default=15.0, help="viewers: measured seconds of the steady run")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    product = Product()
    try:
        if args.section == "overhead":
            print("1e6-event memory-mp burst, alone vs page open + /metrics every second:", flush=True)
            out = overhead(product, args.repeat or 5)
        else:
            print(f"steady memory-mp 20,000 events/s, alone vs {args.viewers} websocket viewers:", flush=True)
            out = viewers(product, args.repeat or 3, args.viewers, args.duration)
    finally:
        product.stop()
    path = RESULTS / f"dashboard-{args.section}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"args": vars(args), **out}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
