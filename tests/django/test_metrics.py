"""The imqueue_* metrics: the latency buckets taken from HdrHistograms, the counters fed by the
delta between samples, a run counted once when it ends, and the multiprocess folder (gauges of
a dead process dropped, its counters kept, ``metrics_reset`` sparing live processes).

Every test uses a backend label of its own, since the metrics of this process share one folder.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from prometheus_client import Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

from experiments.models import Experiment, Run
from experiments.prometheus import metrics
from experiments.services.runs import run_fail
from queues.measurement.histograms import LATENCY_BUCKETS_US, IntervalSample, bucket_counts, new_histogram, record_many
from tests.support.waiting import wait_until


def label() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def scraped(folder: Path | None = None) -> dict[tuple[str, tuple], float]:
    """Every sample of the folder, by (name, sorted labels), as a scrape reads them."""
    registry = metrics.registry_create(folder=folder)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in registry.collect() for s in family.samples}


def latencies_us(n: int, seed: int) -> np.ndarray:
    """Whole microseconds from 1 us to minutes, with every bucket bound, its neighbours and
    the ranges where the histogram's slots are widest."""
    rng = np.random.default_rng(seed)
    spread = np.exp(rng.uniform(np.log(1), np.log(200e6), n)).astype(np.int64)
    bounds = np.array(LATENCY_BUCKETS_US)
    return np.concatenate([spread, bounds - 1, bounds, bounds + 1])


def test_this_process_writes_its_metrics_to_the_configured_folder():
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(settings.IMQ_METRICS_DIR)
    assert values.ValueClass.__name__ == "MmapedValue", "prometheus_client was imported before the settings"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_counts_per_bucket_equal_a_direct_count_of_the_values(seed):
    values_us = latencies_us(20_000, seed)
    hist = new_histogram()
    record_many(hist, values_us)
    counts, sum_us = bucket_counts(hist)
    edges = [0, *LATENCY_BUCKETS_US, np.iinfo(np.int64).max]
    # a latency of v whole microseconds (rounded down) is <= a bound b exactly when v < b
    assert counts == [int(((values_us >= lo) & (values_us < hi)).sum()) for lo, hi in itertools.pairwise(edges)]
    assert sum(counts) == len(values_us)
    assert sum_us == pytest.approx(int(values_us.sum()), rel=5e-4)  # the histogram's resolution


def test_an_empty_histogram_has_empty_buckets():
    assert bucket_counts(new_histogram()) == ([0] * (len(LATENCY_BUCKETS_US) + 1), 0)


def test_a_distribution_fed_at_once_equals_each_value_observed():
    """``latency_observe`` writes what observing every event's latency would (the latency of a
    value of v whole microseconds lies in [v, v + 1) us: observed at its middle)."""
    values_us = latencies_us(5_000, 7)
    hist = new_histogram()
    record_many(hist, values_us)
    counts, sum_us = bucket_counts(hist)
    name = f"imqueue_test_{uuid.uuid4().hex[:8]}"
    fed = Histogram(f"{name}_fed", "fed", ["backend"], buckets=metrics.LATENCY_BUCKETS_S, registry=None)
    observed = Histogram(f"{name}_observed", "observed", ["backend"], buckets=metrics.LATENCY_BUCKETS_S, registry=None)
    metrics.latency_observe(fed.labels("b"), counts, sum_us / 1e6)
    for value in values_us:
        observed.labels("b").observe((int(value) + 0.5) / 1e6)
    families = {f.name: f for f in MultiProcessCollector(None, path=str(settings.IMQ_METRICS_DIR)).collect()}
    by_kind = {
        kind: {
            (s.name.removeprefix(f"{name}_{kind}"), s.labels.get("le")): s.value
            for s in families[f"{name}_{kind}"].samples
        }
        for kind in ("fed", "observed")
    }
    buckets = {k: v for k, v in by_kind["fed"].items() if k[0] == "_bucket"}
    assert len(buckets) == len(LATENCY_BUCKETS_US) + 1
    assert buckets == {k: v for k, v in by_kind["observed"].items() if k[0] == "_bucket"}
    assert by_kind["fed"][("_count", None)] == by_kind["observed"][("_count", None)] == len(values_us)
    assert by_kind["fed"][("_sum", None)] == pytest.approx(by_kind["observed"][("_sum", None)], rel=5e-4)


def test_a_bucket_count_list_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="bucket counts"):
        metrics.latency_observe(metrics.LATENCY.labels(label()), [1, 2], 0.1)


def sample(produced: int, consumed: int, **extra) -> IntervalSample:
    return IntervalSample(
        t_s=1.0,
        produced=produced,
        consumed=consumed,
        unique=consumed,
        produce_eps=0.0,
        consume_eps=extra.pop("consume_eps", 0.0),
        depth=extra.pop("depth", None),
        backlog=0,
        latency_ms=None,
        **extra,
    )


def test_the_delta_between_samples_is_what_a_sample_adds_and_never_negative():
    before = metrics.Progress(produced=100, consumed=90)
    assert metrics.progress_delta(before, sample(250, 240)) == metrics.Progress(150, 150)
    assert metrics.progress_delta(before, sample(100, 90)) == metrics.Progress(0, 0)
    assert metrics.progress_delta(before, sample(50, 10)) == metrics.Progress(0, 0)


def test_counters_end_at_the_runs_last_counts_however_many_samples_it_had():
    backend, run_id = label(), 10_000_000 + uuid.uuid4().int % 1_000_000
    for produced, consumed in [(100, 90), (250, 240), (250, 260), (400, 400)]:
        metrics.sample_observe(
            run_id=run_id, backend=backend, sample=sample(produced, consumed, depth=7, consume_eps=123.0)
        )
    other = label()  # a second run, on another backend, starts its own deltas from zero
    metrics.sample_observe(run_id=run_id + 1, backend=other, sample=sample(30, 20))
    figures = scraped()
    b = (("backend", backend),)
    assert figures[("imqueue_events_produced_total", b)] == 400
    assert figures[("imqueue_events_consumed_total", b)] == 400
    assert figures[("imqueue_queue_depth", b)] == 7
    assert figures[("imqueue_achieved_events_per_second", b)] == 123.0
    assert figures[("imqueue_events_produced_total", (("backend", other),))] == 30


@pytest.mark.django_db(transaction=True)
def test_a_run_is_counted_once_when_it_ends_and_its_gauges_return_to_zero():
    backend = label()
    experiment = Experiment.objects.create(name=f"metrics-{backend}", backend="memory-mp")
    run = Run.objects.create(
        experiment=experiment, backend=backend, spec={"backend": "memory-mp"}, status=Run.Status.RUNNING
    )
    metrics.sample_observe(run_id=run.pk, backend=backend, sample=sample(10, 10, depth=5, consume_eps=9.0))
    run_fail(run=run, error="first")
    run_fail(run=run, error="second: the run already ended, nothing is written or counted")
    figures = scraped()
    b = (("backend", backend),)
    assert figures[("imqueue_runs_total", (("backend", backend), ("status", "failed")))] == 1
    assert figures[("imqueue_queue_depth", b)] == 0
    assert figures[("imqueue_achieved_events_per_second", b)] == 0


CHILD = """
import sys, time
from prometheus_client import Counter, Gauge
Gauge("imqueue_queue_depth", "d", ["backend"], multiprocess_mode="livesum").labels("b").set(5)
Counter("imqueue_events_consumed", "c", ["backend"]).labels("b").inc(11)
print("ready", flush=True)
time.sleep(120)
"""


def child_writer(folder: Path) -> subprocess.Popen:
    """A process that writes a gauge and a counter into ``folder``, then waits to be killed."""
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(folder))
    proc = subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_killed_process_gauges_vanish_and_its_counters_stay(tmp_path):
    proc = child_writer(tmp_path)
    depth, consumed = (
        ("imqueue_queue_depth", (("backend", "b"),)),
        ("imqueue_events_consumed_total", (("backend", "b"),)),
    )
    try:
        assert scraped(tmp_path)[depth] == 5  # a live process's gauge counts
    finally:
        proc.send_signal(signal.SIGKILL)  # as a killed executor: it never zeroes its gauges
        proc.wait(timeout=10)
    figures = scraped(tmp_path)
    assert depth not in figures
    assert figures[consumed] == 11


def test_metrics_reset_removes_the_files_of_processes_gone_and_spares_the_living(tmp_path):
    dead = child_writer(tmp_path)
    dead.send_signal(signal.SIGKILL)
    dead.wait(timeout=10)
    alive = child_writer(tmp_path)
    try:
        assert metrics.metrics_reset(folder=tmp_path) == 2  # the dead one's counter and gauge files
        assert {p.name.rsplit("_", 1)[-1] for p in tmp_path.glob("*.db")} == {f"{alive.pid}.db"}
        wait_until(
            lambda: scraped(tmp_path).get(("imqueue_queue_depth", (("backend", "b"),))) == 5,
            10,
            "the living process's gauge to read 5",
        )
    finally:
        alive.send_signal(signal.SIGKILL)
        alive.wait(timeout=10)
