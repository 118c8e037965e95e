"""End to end: a run executed by a real ``qcluster``, its figures scraped from the web server's
/metrics and from the cluster's own endpoint (``metrics_serve``), both reading the stack's
metrics folder; the output passes ``promtool check metrics``, and the docs' PromQL parses."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import promtool
from tests.support.stack import define, launch_from_admin, wait_for_run
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.timeout(240), pytest.mark.stack(own_metrics=True)]

BACKEND = "memory-mp"
#: The docs page whose ``promql`` block gives the queries for the classic graphs.
DOCS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "prometheus-grafana.md"


def docs_promql() -> list[str]:
    """The queries of the page's ``promql`` block, one a line, without their trailing comments."""
    found = re.search(r"^```promql\n(.*?)^```", DOCS_PAGE.read_text(), re.M | re.S)
    assert found, f"no promql block in {DOCS_PAGE}"
    return [line.split("#")[0].strip() for line in found.group(1).splitlines() if line.split("#")[0].strip()]


def figures(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def of_backend(scraped: dict, name: str, **labels) -> float | None:
    return scraped.get((name, tuple(sorted({"backend": BACKEND, **labels}.items()))))


def test_the_counters_scraped_equal_the_ledger_of_a_run_executed_in_the_cluster(stack, tmp_path):
    tool = promtool()
    experiment = define(
        stack,
        "metrics-steady",
        backend=BACKEND,
        events=6_000,
        rate_eps=2_000.0,
        duration_s=3.0,
        producers=2,
        consumers=2,
    )
    (run_id,) = launch_from_admin(stack, experiment)
    # while it runs, the executor's gauges reach the web process's /metrics
    live = wait_until(
        lambda: (f := figures(stack.get("/metrics"))) and of_backend(f, "imqueue_offered_events_per_second") and f,
        60,
        "the running run's gauges on /metrics",
        interval_s=0.2,
    )
    assert of_backend(live, "imqueue_offered_events_per_second") == 2_000.0
    assert of_backend(live, "imqueue_queue_depth") is not None
    assert of_backend(live, "imqueue_achieved_events_per_second") is not None
    live_names = {name for name, _ in live}
    row = wait_for_run(stack, run_id, timeout_s=120)
    assert row["status"] == "succeeded", (row["error"], stack.log("cluster")[-3000:])
    ((produced, samples),) = stack.query(
        "SELECT MAX(produced), COUNT(*) FROM experiments_sample WHERE run_id = ?", run_id
    )
    assert samples >= 3  # several intervals: the counters were fed by their deltas
    received = __import__("json").loads(row["summary"])["received"]

    text = stack.get("/metrics")
    scraped = figures(text)
    assert of_backend(scraped, "imqueue_events_produced_total") == produced == row["unique"] + row["lost"]
    assert of_backend(scraped, "imqueue_events_consumed_total") == received
    assert of_backend(scraped, "imqueue_duplicates_total") == row["duplicates"]
    assert of_backend(scraped, "imqueue_lost_total") == row["lost"]
    assert of_backend(scraped, "imqueue_runs_total", status="succeeded") == 1
    assert of_backend(scraped, "imqueue_latency_seconds_count") == received
    buckets = sorted(
        (float(labels[1][1]), value)
        for (name, labels), value in scraped.items()
        if name == "imqueue_latency_seconds_bucket" and dict(labels)["backend"] == BACKEND
    )
    assert buckets[-1] == (float("inf"), received)
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:], strict=False)), buckets
    assert of_backend(scraped, "imqueue_latency_seconds_sum") > 0
    assert "django_http_requests_total_by_view_transport_method_total" in text  # django-prometheus's own

    checked = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # the cluster's own endpoint serves the same figures, from the same folder
    port = stack.env["IMQ_CLUSTER_METRICS_PORT"]
    stack.procs["metrics"] = stack._spawn(
        "metrics", [sys.executable, "manage.py", "metrics_serve", "--addr", "127.0.0.1"]
    )
    served = wait_until(lambda: _get(f"http://127.0.0.1:{port}/metrics"), 60, "metrics_serve to answer")
    cluster = figures(served)
    for name in ("imqueue_events_consumed_total", "imqueue_latency_seconds_count", "imqueue_lost_total"):
        assert of_backend(cluster, name) == of_backend(scraped, name)

    # the docs' PromQL parses, and names only series that the exposition has
    queries = docs_promql()
    assert len(queries) == 3, queries  # consumption rate, e2e p99, queue depth
    rules = tmp_path / "docs_promql.yml"
    rules.write_text(
        "groups:\n  - name: docs\n    rules:\n"
        + "".join(f"      - record: imqueue:docs_{n}\n        expr: '{expr}'\n" for n, expr in enumerate(queries))
    )
    checked = subprocess.run([tool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert {"imqueue_events_consumed_total", "imqueue_latency_seconds_bucket", "imqueue_queue_depth"} <= live_names

    # once its executor is gone, the ended run's gauges are no longer served
    pid = row["executor_pid"]
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30, "the executor to end")
    after = figures(stack.get("/metrics"))
    assert not of_backend(after, "imqueue_queue_depth") and not of_backend(after, "imqueue_offered_events_per_second")


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except OSError:
        return None
