"""The control room under a big history: admin pages rendered with 10,000 runs and
1,000,000 samples in the database, and the time from a Launch click to the run's first sample.

Sections (one per process, each on a database of its own):
- ``pages``: builds (once, then reuses) a SQLite database in ``bench/results/`` with ``--runs``
  runs of 20 experiments, each with a real run's summary and environment, and ``--samples``
  samples in all (one run has an hour of them: 3,600). Then renders, through Django's test
  client as a logged-in staff user, each page ``--repeat`` times: the runs list (plain, filtered,
  searched), the hour-long run's page, its samples JSON, a compare page of 3 runs and a sweep
  series' page. Prints the median and the slowest render and the queries each page made.
  Target: every page < 300 ms.
- ``launch``: a real ``qcluster`` on a database of its own; a staff user clicks Launch (the
  admin action, through the test client) ``--repeat`` times; each time, the seconds from the
  click until the run is running and until its first sample is stored.

Usage: ``PYTHONPATH=. .venv/bin/python bench/bench_admin.py pages|launch [--repeat 7]``.
Writes every measurement to ``bench/results/admin-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from bench.product import Product

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
EXPERIMENTS = 20
HOUR_SAMPLES = 3_600


def setup_django(db: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{db}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imqueue_site.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def staff_client():
    from django.contrib.auth.models import User
    from django.test import Client

    user, _ = User.objects.get_or_create(username="bench", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(user)
    return client


def build_history(runs: int, samples: int) -> dict:
    """``runs`` runs and ``samples`` samples, unless the database has them already; the ids the
    pages section opens."""
    from experiments.models import Experiment, Run, RunSeries, Sample
    from experiments.services import runs as services
    from experiments.services.launches import series_launch_sweep
    from queues.workload.spec import WorkloadSpec

    if Run.objects.count() < runs:
        began = time.perf_counter()
        model = services.run_execute(
            run=services.run_prepare(
                spec=WorkloadSpec(backend="memory-mp", events=20_000), experiment_name="bench-model"
            )
        )
        experiments = [
            Experiment.objects.create(name=f"bench-{i}", backend=("memory-mp", "redis-list", "postgres")[i % 3])
            for i in range(EXPERIMENTS)
        ]
        rows = [
            Run(
                experiment=experiments[i % EXPERIMENTS],
                backend=experiments[i % EXPERIMENTS].backend,
                status="succeeded",
                spec=model.spec,
                environment=model.environment,
                summary=model.summary,
                verdict="exact",
                duration_s=model.duration_s,
                throughput_eps=model.throughput_eps * (0.8 + (i % 40) / 100),
                latency_p50_ms=model.latency_p50_ms,
                latency_p99_ms=model.latency_p99_ms,
                unique=model.unique,
                duplicates=0,
                lost=0,
                started_at=model.started_at,
                finished_at=model.finished_at,
            )
            for i in range(runs - Run.objects.count())
        ]
        Run.objects.bulk_create(rows, batch_size=2_000)
        ids = list(Run.objects.order_by("pk").values_list("pk", flat=True))
        hour_run, rest = ids[-1], ids[:-1]
        per_run, extra = divmod(max(0, samples - HOUR_SAMPLES), len(rest))
        batch: list = []
        for run_id, count in [(hour_run, HOUR_SAMPLES)] + [(r, per_run + (i < extra)) for i, r in enumerate(rest)]:
            for t in range(count):
                batch.append(
                    Sample(
                        run_id=run_id,
                        t_s=t + 1.0,
                        produced=1000 * t,
                        consumed=1000 * t,
                        unique=1000 * t,
                        produce_eps=1000.0,
                        consume_eps=990.0 + t % 20,
                        depth=t % 50,
                        backlog=t % 70,
                        p50_ms=1.0 + t % 7,
                        p90_ms=2.0,
                        p99_ms=5.0 + t % 11,
                        p999_ms=9.0,
                        max_ms=12.0,
                        offered_eps=1000.0,
                        due=1000 * t,
                    )
                )
            if len(batch) >= 20_000:
                Sample.objects.bulk_create(batch)
                batch = []
        Sample.objects.bulk_create(batch)
        experiment = Experiment.objects.get(name="bench-0")
        series = series_launch_sweep(experiment=experiment, knob="consumers", values=[1, 2, 4, 8])
        Run.objects.filter(series=series).update(status="succeeded", throughput_eps=100_000.0, latency_p99_ms=3.0)
        print(
            f"built {Run.objects.count():,} runs and {Sample.objects.count():,} samples in "
            f"{time.perf_counter() - began:.0f} s",
            flush=True,
        )
    from experiments.services.launches import series_refresh

    series = RunSeries.objects.filter(kind="sweep").latest("pk")
    series_refresh(series=series)
    hour = Sample.objects.filter(t_s=HOUR_SAMPLES).values_list("run_id", flat=True).first()
    some = list(Run.objects.filter(series__isnull=True).order_by("pk").values_list("pk", flat=True)[:3])
    return {"hour_run": hour, "compare": some, "series": series.pk}


def time_pages(repeat: int, ids: dict) -> list[dict]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = staff_client()
    pages = {
        "runs list": "/admin/experiments/run/",
        "runs list, filtered by backend": "/admin/experiments/run/?backend=redis-list",
        "runs list, searched": "/admin/experiments/run/?q=bench-7",
        "run page (3,600 samples)": f"/admin/experiments/run/{ids['hour_run']}/change/",
        "run samples JSON (3,600 samples)": f"/runs/{ids['hour_run']}/samples.json",
        "compare 3 runs": "/admin/experiments/run/compare/?ids=" + ",".join(map(str, ids["compare"])),
        "sweep series page": f"/admin/experiments/runseries/{ids['series']}/change/",
    }
    rows = []
    for label, path in pages.items():
        client.get(path)  # warm: templates compiled, caches filled
        times = []
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as queries:
                began = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - began) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"{path}: HTTP {response.status_code}")
        rows.append(
            {
                "page": label,
                "path": path,
                "median_ms": statistics.median(times),
                "max_ms": max(times),
                "queries": len(queries),
                "bytes": len(response.content),
            }
        )
        print(
            f"  {label:<36} median {rows[-1]['median_ms']:7.1f} ms  slowest {rows[-1]['max_ms']:7.1f} ms  "
            f"{rows[-1]['queries']:3d} queries  {rows[-1]['bytes'] / 1024:6.0f} KiB",
            flush=True,
        )
    return rows


def time_launches(repeat: int, product: Product) -> list[dict]:
    """Launch clicks (the admin action, through the test client) executed by ``product``'s
    qcluster, on its database."""
    from experiments.models import Experiment, Run, Sample

    client = staff_client()
    experiment = Experiment.objects.create(
        name="bench-launch", backend="memory-mp", rate_eps=1000.0, duration_s=3.0, warmup_s=0.0
    )
    rows = []
    for _ in range(repeat):
        began = time.perf_counter()
        response = client.post(
            "/admin/experiments/experiment/",
            {
                "action": "launch",
                "_selected_action": [experiment.pk],
                "repeat": "1",
                "apply": "Launch",
            },
        )
        clicked = time.perf_counter()
        assert response.status_code in (200, 302), response.status_code
        run = Run.objects.filter(experiment=experiment).latest("pk")  # the click stored it
        started = first = None
        while first is None:
            if started is None and Run.objects.filter(pk=run.pk, status="running").exists():
                started = time.perf_counter()
            if Sample.objects.filter(run_id=run.pk).exists():
                first = time.perf_counter()
            time.sleep(0.005)
        while not Run.objects.filter(pk=run.pk, finished_at__isnull=False).exists():
            time.sleep(0.05)
        rows.append(
            {
                "click_ms": (clicked - began) * 1000,
                "to_running_s": (started or first) - began,
                "to_first_sample_s": first - began,
            }
        )
        print(
            f"  click answered in {rows[-1]['click_ms']:.0f} ms, running after {rows[-1]['to_running_s']:.2f} s, "
            f"first sample after {rows[-1]['to_first_sample_s']:.2f} s",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=("pages", "launch"), help="one per process: each has its own database")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    out: dict = {"args": vars(args)}
    if args.section == "pages":
        db = RESULTS / f"admin-history-{args.runs}-{args.samples}.sqlite3"
        setup_django(db)
        print(f"pages with {args.runs:,} runs and {args.samples:,} samples ({db.name}):", flush=True)
        out["pages"] = time_pages(args.repeat, build_history(args.runs, args.samples))
    else:
        product = Product(web=False)
        try:
            setup_django(product.db)
            print("launch click to first sample (a 3 s steady run on memory-mp, a real qcluster):", flush=True)
            out["launch"] = time_launches(args.repeat, product)
        finally:
            product.stop()
        for key in ("click_ms", "to_running_s", "to_first_sample_s"):
            print(f"  median {key}: {statistics.median(r[key] for r in out['launch']):.3f}")
    path = RESULTS / f"admin-{args.section}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
