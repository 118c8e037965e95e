"""The imqueue_* Prometheus metrics: fed by the run's executor, served by every /metrics.

A run executes in a process of its own (``manage.py executerun``, a child of a cluster worker)
and /metrics is served by the web process, so these figures cross processes through
prometheus_client's multiprocess mode: each process writes its values to files named by its
pid in ``settings.IMQ_METRICS_DIR`` (exported as ``PROMETHEUS_MULTIPROC_DIR`` by the settings
before the client is imported), and a scrape adds up every file (``MultiProcessCollector``).
Counter and histogram files of ended processes keep counting, as counters must; the gauges
describe the running run (``livesum``: only live processes count, see ``dead_processes_forget``).

Labels stay few and bounded: ``backend`` (and ``status`` for runs), never a run id.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django_prometheus.exports import ExportToDjangoView
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

from queues.measurement.histograms import LATENCY_BUCKETS_US, IntervalSample
from queues.workers.processes import process_alive

LATENCY_BUCKETS_S = tuple(bound_us / 1e6 for bound_us in LATENCY_BUCKETS_US)

EVENTS_PRODUCED = Counter("imqueue_events_produced", "Events the producers sent.", ["backend"])
EVENTS_CONSUMED = Counter(
    "imqueue_events_consumed", "Events the consumers received (deliveries: duplicates included).", ["backend"]
)
LATENCY = Histogram(
    "imqueue_latency_seconds",
    "End-to-end latency of the events received, from their intended send time.",
    ["backend"],
    buckets=LATENCY_BUCKETS_S,
)
RUNS = Counter("imqueue_runs", "Runs ended, by the status they ended with.", ["backend", "status"])
DUPLICATES = Counter("imqueue_duplicates", "Events received more than once, counted when their run ends.", ["backend"])
LOST = Counter("imqueue_lost", "Events never received, counted when their run ends.", ["backend"])
# livesum: only the running run's executor writes these (one run at a time per machine), so the
# sum over live processes is that run's figure; an ended executor drops out instead of leaving
# its last reading behind; were two runs ever to run at once, their rates and depths would add.
QUEUE_DEPTH = Gauge(
    "imqueue_queue_depth",
    "Messages in the running run's queue, not yet acked, as the backend reports them.",
    ["backend"],
    multiprocess_mode="livesum",
)
OFFERED_RATE = Gauge(
    "imqueue_offered_events_per_second",
    "Rate the running steady run's schedule offers.",
    ["backend"],
    multiprocess_mode="livesum",
)
ACHIEVED_RATE = Gauge(
    "imqueue_achieved_events_per_second",
    "Rate the running run's consumers received in its last interval.",
    ["backend"],
    multiprocess_mode="livesum",
)


@dataclass(frozen=True)
class Progress:
    """A run's cumulative counts at its last sample: what the counters already hold of it."""

    produced: int = 0
    consumed: int = 0


def progress_delta(previous: Progress, sample: IntervalSample) -> Progress:
    """What ``sample`` adds to the counters since ``previous``. Never negative: a counter only
    goes up, and a sample's counts never go down within a run."""
    return Progress(max(0, sample.produced - previous.produced), max(0, sample.consumed - previous.consumed))


#: Per run (by primary key) in this process: its counts at the last sample fed.
_progress: dict[int, Progress] = {}


def sample_observe(*, run_id: int, backend: str, sample: IntervalSample) -> None:
    """Feed one interval of a running run: counters by their increase since the run's previous
    sample, the interval's latency distribution into the histogram, and the gauges."""
    delta = progress_delta(_progress.get(run_id, Progress()), sample)
    _progress[run_id] = Progress(sample.produced, sample.consumed)
    EVENTS_PRODUCED.labels(backend).inc(delta.produced)
    EVENTS_CONSUMED.labels(backend).inc(delta.consumed)
    if sample.latency_buckets:
        latency_observe(LATENCY.labels(backend), sample.latency_buckets, sample.latency_sum_us / 1e6)
    if sample.depth is not None:
        QUEUE_DEPTH.labels(backend).set(sample.depth)
    if sample.offered_eps is not None:
        OFFERED_RATE.labels(backend).set(sample.offered_eps)
    ACHIEVED_RATE.labels(backend).set(sample.consume_eps)


def latency_observe(histogram: Histogram, counts: list[int], sum_s: float) -> None:
    """Add a whole distribution to a labelled histogram: ``counts[i]`` values in bucket ``i``
    (not cumulative, the last above the top bound) adding up to ``sum_s``.

    prometheus_client can only ``observe`` one value at a time, which re-observing each event
    (a million a run) or a few percentiles would either cost too much or misstate. Its buckets
    (``_buckets``, one value per bucket, cumulated when collected) and ``_sum`` are written
    directly instead, the same values ``observe`` increments.
    """
    if len(counts) != len(histogram._buckets):
        raise ValueError(f"{len(counts)} bucket counts for a histogram of {len(histogram._buckets)} buckets")
    for value, count in zip(histogram._buckets, counts, strict=True):
        if count:
            value.inc(count)
    histogram._sum.inc(sum_s)


def run_ended(*, run_id: int, backend: str, status: str, duplicates: int | None, lost: int | None) -> None:
    """Count a run that just ended (once: the caller is the write that ended it) with its
    duplicates and lost, and zero the running run's gauges."""
    _progress.pop(run_id, None)
    RUNS.labels(backend, status).inc()
    DUPLICATES.labels(backend).inc(duplicates or 0)
    LOST.labels(backend).inc(lost or 0)
    for gauge in (QUEUE_DEPTH, OFFERED_RATE, ACHIEVED_RATE):
        gauge.labels(backend).set(0)


# -- receivers of ``experiments.signals`` (connected in ``ExperimentsConfig.ready``) -----------


def on_sample_stored(sender: Any, *, run: Any, sample: IntervalSample, **kwargs: Any) -> None:
    """``sample_stored``: feed the engine's sample of a running run."""
    sample_observe(run_id=run.pk, backend=run.backend, sample=sample)


def on_run_ended(sender: Any, *, run: Any, counted: bool, **kwargs: Any) -> None:
    """``run_ended``: count the run, once (``counted``: the write that ended it)."""
    if counted:
        run_ended(run_id=run.pk, backend=run.backend, status=run.status, duplicates=run.duplicates, lost=run.lost)


# -- the folder --------------------------------------------------------------------------------

_PID = re.compile(r"_(\d+)\.db$")
_LIVE_GAUGE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


def dead_processes_forget(*, folder: Path | None = None) -> list[int]:
    """Drop the live-gauge files of processes that are gone (``mark_process_dead``), however
    they ended: an executor killed with SIGKILL never zeroes its gauges. Their counters and
    histograms stay. Returns the pids forgotten. A pid reused by a new process keeps its old
    gauges until that one ends too (pids are only meaningful within one machine or container:
    the folder must not be shared between containers)."""
    folder = Path(folder or settings.IMQ_METRICS_DIR)
    pids = {int(m.group(1)) for name in os.listdir(folder) if (m := _LIVE_GAUGE.match(name))}
    dead = sorted(pid for pid in pids if not process_alive(pid))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(folder))
    return dead


def metrics_reset(*, folder: Path | None = None) -> int:
    """Empty the folder of every process that is gone (and of this one, about to exit): run
    before the web server and the cluster start, so that figures of an earlier start do not
    come back. The files of a running process are never removed under it. Returns how many
    files were removed."""
    folder = Path(folder or settings.IMQ_METRICS_DIR)
    removed = 0
    for path in folder.glob("*.db"):
        m = _PID.search(path.name)
        if m and (int(m.group(1)) == os.getpid() or not process_alive(int(m.group(1)))):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class _LiveCollector:
    """``MultiProcessCollector`` over the folder, after forgetting the dead processes' gauges."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.collector = multiprocess.MultiProcessCollector(None, path=str(folder))

    def collect(self):
        dead_processes_forget(folder=self.folder)
        return self.collector.collect()


def registry_create(*, folder: Path | None = None) -> CollectorRegistry:
    """A registry that reads every process's figures in the folder (what a scrape serves)."""
    registry = CollectorRegistry()
    registry.register(_LiveCollector(Path(folder or settings.IMQ_METRICS_DIR)))
    return registry


def metrics_view(request):
    """/metrics: django-prometheus's own view (which reads the folder with a
    ``MultiProcessCollector`` since ``PROMETHEUS_MULTIPROC_DIR`` is set), after forgetting the
    gauges of processes that are gone."""
    dead_processes_forget()
    return ExportToDjangoView(request)
