"""Reads. Keyword-only, named ``<entity>_<action>``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db.models import Count, Max, Min, OuterRef, Subquery

from experiments.models import Run, RunSeries, Sample

#: The columns of a run's samples, in this order (``run_samples_columns``, the charts, exports).
SAMPLE_COLUMNS = (
    "t_s",
    "produce_eps",
    "consume_eps",
    "offered_eps",
    "depth",
    "backlog",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "produced",
    "consumed",
    "unique",
    "due",
    "send_delay_p99_ms",
    "markers",
)


class RunsNotFound(ValueError):
    """Some asked-for run ids name no run; ``missing`` lists them in the order asked."""

    def __init__(self, missing: Sequence[int]) -> None:
        self.missing = list(missing)
        super().__init__(f"no run with id {', '.join(str(i) for i in self.missing)}")


def run_exists(*, run_id: int) -> bool:
    return Run.objects.filter(pk=run_id).exists()


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
        .values("series_id")
        .annotate(succeeded=Count("id"), **aggregates)
        .order_by()
    )
    return {
        row["series_id"]: {
            name: (row[f"{name}__min"], row[f"{name}__max"]) for name in fields if row[f"{name}__min"] is not None
        }
        for row in rows
        if row["succeeded"] >= 2
    }


#: The version of the ``--json`` object (docs/reference/json.md): keys may be added within a
#: version; a key removed or renamed, or a change of a key's meaning or unit, makes a new one.
JSON_SCHEMA_VERSION = 1


def run_json_summary(*, run: Run) -> dict[str, Any]:
    """The run as ``runexperiment --json`` prints it (docs/reference/json.md): the stored summary
    with the run's current status and error and the object's ``schema_version``; a run that never
    produced a summary (queued, failed at the start) gets its id, backend and environment."""
    summary = dict(run.summary) if run.summary else {"run_id": run.pk, "backend": run.backend}
    summary["schema_version"] = JSON_SCHEMA_VERSION
    summary.setdefault("environment", run.environment)
    summary["status"], summary["error"] = run.status, run.error or None
    return summary


def run_progress(*, run: Run) -> float | None:
    """How far the run has got, 0..1, from its last sample: see ``progress_of``."""
    if run.status == Run.Status.SUCCEEDED:
        return 1.0
    last = Sample.objects.filter(run_id=run.pk).order_by("-t_s").values_list("t_s", "unique").first()
    t_s, unique = last if last else (0.0, 0)
    return progress_of(spec=run.spec or {}, status=run.status, t_s=t_s, unique=unique)


def progress_of(*, spec: dict, status: str, t_s: float, unique: int) -> float | None:
    """0..1 from a run's last sample, without a query (the live publisher has the sample): a
    burst by the events delivered (unique) of those it sends, a steady run by the time elapsed
    of warm-up + duration. 1 for a succeeded run; ``None`` when the spec says neither (an old or
    hand-made row)."""
    if status == Run.Status.SUCCEEDED:
        return 1.0
    if spec.get("rate_eps") is not None:
        done, total = t_s, float(spec.get("warmup_s") or 0) + float(spec.get("duration_s") or 0)
    else:
        done, total = unique, spec.get("events")
    if not total:
        return None
    return min(1.0, max(0.0, done / total))


# -- the live dashboard (experiments/live/source.py) -------------------------------------------------

#: A run in one of these may still change; any other status is its end.
IN_FLIGHT = (Run.Status.QUEUED, Run.Status.RUNNING)
#: How many ended runs the overview lists below the running ones.
OVERVIEW_RECENT = 20


def run_live_state(*, run: Run, last: tuple[float, int, int] | None = None) -> dict[str, Any]:
    """What the run page shows beside the charts: status, spec summary, progress, the ledger so
    far and, once the run ended, its verdict and summary. ``last`` is its last sample's
    ``(t_s, consumed, unique)`` (read when not given)."""
    if last is None:
        last = Sample.objects.filter(run_id=run.pk).order_by("-t_s").values_list("t_s", "consumed", "unique").first()
    t_s, consumed, unique = last or (0.0, 0, 0)
    ended = run.status not in IN_FLIGHT
    state = {
        "id": run.pk,
        "status": run.status,
        "ended": ended,
        "error": run.error or None,
        "progress": progress_of(spec=run.spec or {}, status=run.status, t_s=t_s, unique=unique),
        # while it runs, duplicates are the deliveries beyond the unique events; lost is known
        # only at the end (after the final drain)
        "ledger": {"unique": unique, "duplicates": max(0, consumed - unique), "lost": None},
    }
    if ended:
        state.update(verdict=run.verdict or None, summary=run_json_summary(run=run))
        if run.unique is not None:
            state["ledger"] = {"unique": run.unique, "duplicates": run.duplicates, "lost": run.lost}
    return state


def run_live_read(*, run_id: int, after_t_s: float | None = None) -> dict[str, Any] | None:
    """One read of the live view: ``{"run": run_live_state, "columns": the samples after
    after_t_s}``, or ``None`` for a missing run."""
    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        return None
    columns = run_samples_columns(run_id=run_id, after_t_s=after_t_s)
    last = None
    if columns["t_s"]:
        last = (columns["t_s"][-1], columns["consumed"][-1], columns["unique"][-1])
    return {"run": run_live_state(run=run, last=last), "columns": columns}


def run_spec_summary(*, spec: dict) -> str:
    """``"burst of 100000 events, 2 producers x 2 consumers, batch 100, 1 event/message"``."""
    if spec.get("rate_eps") is not None:
        shape = (
            f"steady {spec['rate_eps']:g} events/s for {spec.get('duration_s', 0):g} s "
            f"(+{spec.get('warmup_s', 0):g} s warm-up)"
        )
    else:
        shape = f"burst of {spec.get('events')} events"
    return (
        f"{shape}, {spec.get('producers')} producers x {spec.get('consumers')} consumers, "
        f"batch {spec.get('batch')}, {spec.get('events_per_message')} event/message"
    )


def runs_overview(*, recent: int = OVERVIEW_RECENT) -> list[dict[str, Any]]:
    """The in-flight runs then the ``recent`` latest ended ones, newest first, as the overview
    lists them; two queries (the runs, then the last sample of each in-flight run)."""
    columns = ("id", "experiment__name", "backend", "status", "spec", "verdict", "throughput_eps", "latency_p99_ms")
    in_flight = list(Run.objects.filter(status__in=IN_FLIGHT).order_by("-pk").values(*columns))
    ended = list(Run.objects.exclude(status__in=IN_FLIGHT).order_by("-pk").values(*columns)[:recent])
    lasts = _last_samples(run_ids=[r["id"] for r in in_flight])
    rows = []
    for r in in_flight + ended:
        last = lasts.get(r["id"])
        rows.append(
            {
                "id": r["id"],
                "experiment": r["experiment__name"],
                "backend": r["backend"],
                "status": r["status"],
                "progress": progress_of(
                    spec=r["spec"] or {}, status=r["status"], t_s=last["t_s"], unique=last["unique"]
                )
                if last
                else (1.0 if r["status"] == Run.Status.SUCCEEDED else None),  # an ended run's last sample is not read
                "events_s": last["consume_eps"] if last else r["throughput_eps"],
                "p99_ms": last["p99_ms"] if last else r["latency_p99_ms"],
                "verdict": r["verdict"] or None,
            }
        )
    return rows


def _last_samples(*, run_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Each run's latest sample (t_s, unique, consume_eps, p99_ms), in one query."""
    if not run_ids:
        return {}
    latest = Sample.objects.filter(run_id=OuterRef("run_id")).order_by("-t_s").values("pk")[:1]
    rows = Sample.objects.filter(run_id__in=run_ids, pk=Subquery(latest)).values(
        "run_id", "t_s", "unique", "consume_eps", "p99_ms"
    )
    return {row["run_id"]: row for row in rows}


def scorecard_latest() -> RunSeries | None:
    """The latest scorecard (``manage.py scorecard``) that has a result."""
    return RunSeries.objects.filter(kind=RunSeries.Kind.SCORECARD).exclude(result=None).order_by("-pk").first()
