"""Reads. Keyword-only, named ``<entity>_<action>``."""

from __future__ import annotations

from experiments.models import Run, RunSeries, Sample


def run_is_cancelled(*, run_id: int) -> bool:
    return Run.objects.filter(pk=run_id, status=Run.Status.CANCELLED).exists()


def series_is_cancelled(*, series_id: int) -> bool:
    return RunSeries.objects.filter(pk=series_id, status=RunSeries.Status.CANCELLED).exists()


# The numeric columns of a sample that the charts draw, in one fixed order (``depth_detail`` is
# left out: it is a per-backend breakdown, not a time series).
SAMPLE_COLUMNS = (
    "t_s", "produced", "consumed", "unique", "produce_eps", "consume_eps", "offered_eps", "due",
    "depth", "backlog", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "send_delay_p99_ms",
)


def run_samples_columns(*, run_id: int, after_t_s: float | None = None) -> dict[str, list]:
    """The run's samples as columns (``{"t_s": [...], "p99_ms": [...], ...}``) ordered by
    ``t_s``, in one query; a chart takes columns, and thousands of rows as dicts cost more.
    ``after_t_s`` keeps only the samples after it (a page polling a run in flight)."""
    samples = Sample.objects.filter(run_id=run_id)
    if after_t_s is not None:
        samples = samples.filter(t_s__gt=after_t_s)
    rows = samples.order_by("t_s").values_list(*SAMPLE_COLUMNS)
    columns: dict[str, list] = {name: [] for name in SAMPLE_COLUMNS}
    for row in rows:
        for name, value in zip(SAMPLE_COLUMNS, row, strict=True):
            columns[name].append(value)
    return columns


def run_progress(*, run: Run) -> float | None:
    """How far the run has got, 0..1, from its last sample: a burst by the events delivered
    (unique) of those it sends, a steady run by the time elapsed of warm-up + duration.
    1 for a succeeded run; ``None`` when the spec says neither (an old or hand-made row)."""
    if run.status == Run.Status.SUCCEEDED:
        return 1.0
    last = Sample.objects.filter(run_id=run.pk).order_by("-t_s").values_list("t_s", "unique").first()
    t_s, unique = last if last else (0.0, 0)
    spec = run.spec or {}
    if spec.get("rate_eps") is not None:
        planned_s = float(spec.get("warmup_s") or 0) + float(spec.get("duration_s") or 0)
        done, total = t_s, planned_s
    else:
        done, total = unique, spec.get("events")
    if not total:
        return None
    return min(1.0, max(0.0, done / total))
