"""Reads. Keyword-only, named ``<entity>_<action>``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db.models import Count, Max, Min

from experiments.models import Run, RunSeries, Sample

#: The columns of a run's samples, in this order (``run_samples_columns``, the charts, exports).
SAMPLE_COLUMNS = (
    "t_s", "produce_eps", "consume_eps", "offered_eps", "depth", "backlog", "p50_ms", "p90_ms", "p99_ms",
    "p999_ms", "max_ms", "produced", "consumed", "unique", "due", "send_delay_p99_ms",
)


class RunsNotFound(ValueError):
    """Some asked-for run ids name no run; ``missing`` lists them in the order asked."""

    def __init__(self, missing: Sequence[int]) -> None:
        self.missing = list(missing)
        super().__init__(f"no run with id {', '.join(str(i) for i in self.missing)}")


def run_is_cancelled(*, run_id: int) -> bool:
    return Run.objects.filter(pk=run_id, status=Run.Status.CANCELLED).exists()


def series_is_cancelled(*, series_id: int) -> bool:
    return RunSeries.objects.filter(pk=series_id, status=RunSeries.Status.CANCELLED).exists()


def run_samples_columns(*, run_id: int, after_t_s: float | None = None) -> dict[str, list]:
    """The run's samples as columns (``SAMPLE_COLUMNS``, each a list ordered by ``t_s``; all
    empty for a run without samples). One ``values_list`` query and no model instances: a long
    steady run has thousands of samples. ``after_t_s`` keeps only the samples after it (a page
    polling a run in flight)."""
    samples = Sample.objects.filter(run_id=run_id)
    if after_t_s is not None:
        samples = samples.filter(t_s__gt=after_t_s)
    rows = samples.order_by("t_s").values_list(*SAMPLE_COLUMNS)
    columns: dict[str, list] = {name: [] for name in SAMPLE_COLUMNS}
    appends = [columns[name].append for name in SAMPLE_COLUMNS]
    for row in rows.iterator(chunk_size=2000):
        for append, value in zip(appends, row, strict=True):
            append(value)
    return columns


def runs_by_ids(*, ids: Iterable[int]) -> list[Run]:
    """The runs with these ids, in the order given (a repeated id gives the same run twice),
    with their experiment and series loaded. Raises ``RunsNotFound`` naming every id that has
    no run, rather than comparing or exporting fewer runs than asked."""
    ids = list(ids)
    found = Run.objects.select_related("experiment", "series").in_bulk(ids)
    missing = [i for i in ids if i not in found]
    if missing:
        raise RunsNotFound(missing)
    return [found[i] for i in ids]


def series_spreads(*, series_ids: Iterable[int], fields: Sequence[str]) -> dict[int, dict[str, tuple[Any, Any]]]:
    """For each repeat series among ``series_ids`` with at least two succeeded runs, the
    ``(min, max)`` of each of ``fields`` (Run columns) over those runs, in one query. A series
    with a single succeeded run says nothing of the spread, so it is left out; so is a figure no
    succeeded run has."""
    aggregates = {f"{name}__min": Min(name) for name in fields} | {f"{name}__max": Max(name) for name in fields}
    rows = (
        Run.objects.filter(
            series_id__in=set(series_ids), series__kind=RunSeries.Kind.REPEAT, status=Run.Status.SUCCEEDED
        )
        .values("series_id").annotate(succeeded=Count("id"), **aggregates).order_by()
    )
    return {
        row["series_id"]: {
            name: (row[f"{name}__min"], row[f"{name}__max"]) for name in fields if row[f"{name}__min"] is not None
        }
        for row in rows if row["succeeded"] >= 2
    }


def run_json_summary(*, run: Run) -> dict[str, Any]:
    """The run as ``runexperiment --json`` prints it (the README's ``--json`` object): the stored
    summary with the run's current status and error; a run that never produced a summary (queued,
    failed at the start) gets its id, backend and environment."""
    summary = dict(run.summary) if run.summary else {"run_id": run.pk, "backend": run.backend}
    summary.setdefault("environment", run.environment)
    summary["status"], summary["error"] = run.status, run.error or None
    return summary


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
