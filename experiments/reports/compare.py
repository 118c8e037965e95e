"""Runs side by side: each figure, its ratio to a baseline run, the spread of the repeats, and
whether a difference is a win, a loss, or no larger than the repeats' own spread.

Reads only (the spreads come from ``selectors``); the admin page and ``compareruns`` both use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from experiments.models import Run
from experiments.selectors import run_samples_columns, series_spreads

# How a run's figure compares with the baseline's. "within spread" and "no spread known" are
# never wins: without repeats a difference may be noise, so only the ratio is shown.
BETTER, WORSE = "better", "worse"
WITHIN_SPREAD = "within spread"  # |run - baseline| <= the wider of the two runs' spreads (max - min)
NO_SPREAD = "no spread known"  # neither run belongs to a repeat series with 2+ succeeded runs
SAME = "same"  # exactly equal values (e.g. 0 lost in both)
NO_VALUE = "no value"  # the run or the baseline lacks the figure (a failed run)
BASELINE = "baseline"


class CompareError(ValueError):
    """The runs cannot be compared as asked (fewer than two, a repeated id, a baseline not
    among them). The message says what to change."""


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str = ""
    #: True/False: a measured figure and its better direction (classed); None: an input or a
    #: label (ratio only when numeric, never classed)
    higher_is_better: bool | None = None
    numeric: bool = True


FIGURES = (
    Figure("experiment", "experiment", numeric=False),
    Figure("backend", "backend", numeric=False),
    Figure("status", "status", numeric=False),
    Figure("verdict", "verdict", numeric=False),
    Figure("throughput_eps", "throughput", "events/s", higher_is_better=True),
    Figure("duration_s", "drain time", "s", higher_is_better=False),
    Figure("latency_p50_ms", "latency p50", "ms", higher_is_better=False),
    Figure("latency_p99_ms", "latency p99", "ms", higher_is_better=False),
    Figure("lost", "lost", "events", higher_is_better=False),
    Figure("duplicates", "duplicates", "events", higher_is_better=False),
    Figure("events", "events"),
    Figure("producers", "producers"),
    Figure("consumers", "consumers"),
    Figure("rate_eps", "offered rate", "events/s"),
)
#: Measured figures: Run columns, so a repeat series' spread is one aggregate query.
MEASURED = tuple(f.key for f in FIGURES if f.higher_is_better is not None)


@dataclass(frozen=True)
class Cell:
    value: Any
    ratio: float | None = None  # value / the baseline's; None where either is missing or zero
    spread: tuple[float, float] | None = None  # (min, max) over the run's repeat series
    outcome: str | None = None  # one of the constants above; None for a figure never classed


@dataclass(frozen=True)
class RunColumn:
    run_id: int
    series_id: int | None
    is_baseline: bool
    cells: dict[str, Cell]


@dataclass(frozen=True)
class Comparison:
    baseline_id: int
    figures: tuple[Figure, ...]
    runs: tuple[RunColumn, ...]


def runs_compare(*, runs: Sequence[Run], baseline_id: int | None = None) -> Comparison:
    """Compare ``runs`` (in the order given) with the baseline, the first run by default.

    Raises ``CompareError`` for fewer than two runs, a run given twice, or a baseline that is
    not among them.
    """
    ids = [run.pk for run in runs]
    if len(ids) < 2:
        raise CompareError(f"comparing needs at least two runs, got {len(ids)}")
    if len(set(ids)) != len(ids):
        raise CompareError(f"each run may be given once, got ids {', '.join(map(str, ids))}")
    baseline_id = ids[0] if baseline_id is None else baseline_id
    if baseline_id not in ids:
        raise CompareError(f"the baseline {baseline_id} is not among the runs compared ({', '.join(map(str, ids))})")
    spreads = series_spreads(series_ids={r.series_id for r in runs if r.series_id}, fields=MEASURED)
    values = {run.pk: _values(run) for run in runs}
    run_spreads = {run.pk: spreads.get(run.series_id, {}) for run in runs}
    columns = tuple(
        RunColumn(
            run_id=run.pk,
            series_id=run.series_id,
            is_baseline=run.pk == baseline_id,
            cells={
                f.key: _cell(
                    f,
                    values[run.pk][f.key],
                    values[baseline_id][f.key],
                    run_spreads[run.pk].get(f.key),
                    run_spreads[baseline_id].get(f.key),
                    is_baseline=run.pk == baseline_id,
                )
                for f in FIGURES
            },
        )
        for run in runs
    )
    return Comparison(baseline_id=baseline_id, figures=FIGURES, runs=columns)


def _values(run: Run) -> dict[str, Any]:
    """The figures of one run: measured ones from its columns, inputs from its spec snapshot."""
    spec = run.spec or {}
    return {
        "experiment": run.experiment.name,
        "backend": run.backend,
        "status": run.status,
        "verdict": run.verdict or None,
        **{key: getattr(run, key) for key in MEASURED},
        "events": spec.get("events"),
        "producers": spec.get("producers"),
        "consumers": spec.get("consumers"),
        "rate_eps": spec.get("rate_eps"),
    }


def _cell(
    figure: Figure, value: Any, base: Any, spread: tuple | None, base_spread: tuple | None, *, is_baseline: bool
) -> Cell:
    if not figure.numeric:
        return Cell(value=value)
    ratio = value / base if value and base else None  # None for a missing or zero value on either side
    if figure.higher_is_better is None:
        return Cell(value=value, ratio=ratio)
    outcome = BASELINE if is_baseline else _outcome(figure, value, base, spread, base_spread)
    return Cell(value=value, ratio=ratio, spread=spread, outcome=outcome)


def _outcome(figure: Figure, value: Any, base: Any, spread: tuple | None, base_spread: tuple | None) -> str:
    if value is None or base is None:
        return NO_VALUE
    if value == base:
        return SAME
    widths = [s[1] - s[0] for s in (spread, base_spread) if s]
    if not widths:
        return NO_SPREAD
    if abs(value - base) <= max(widths):
        return WITHIN_SPREAD
    return BETTER if (value > base) == figure.higher_is_better else WORSE


def comparison_as_dict(c: Comparison) -> dict[str, Any]:
    """JSON-able: ``baseline_id``, ``figures`` (key, label, unit, higher_is_better) and ``runs``,
    each with ``run_id``, ``series_id``, ``baseline`` and ``figures``: key -> ``{value, ratio,
    spread: {min, max} or null, outcome}``."""
    return {
        "baseline_id": c.baseline_id,
        "figures": [
            {"key": f.key, "label": f.label, "unit": f.unit, "higher_is_better": f.higher_is_better} for f in c.figures
        ],
        "runs": [
            {
                "run_id": col.run_id,
                "series_id": col.series_id,
                "baseline": col.is_baseline,
                "figures": {
                    key: {
                        "value": cell.value,
                        "ratio": cell.ratio,
                        "outcome": cell.outcome,
                        "spread": {"min": cell.spread[0], "max": cell.spread[1]} if cell.spread else None,
                    }
                    for key, cell in col.cells.items()
                },
            }
            for col in c.runs
        ],
    }


def format_comparison(c: Comparison) -> str:
    """A fixed-width table: one row per figure, one column per run. A measured figure shows the
    value, the repeats' spread in brackets, and beside the baseline's the ratio and outcome."""
    header = ["figure", *(f"run {col.run_id}" + (" (baseline)" if col.is_baseline else "") for col in c.runs)]
    rows = [header] + [
        [f"{f.label} {f.unit}".strip(), *(_cell_text(col.cells[f.key], is_baseline=col.is_baseline) for col in c.runs)]
        for f in c.figures
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append(
        f"ratios are run / run {c.baseline_id}; [min-max] is the spread of a run's repeat series; "
        f"a difference within the wider spread is '{WITHIN_SPREAD}', not a win; "
        "without repeats only the ratio is shown"
    )
    return "\n".join(lines)


def _cell_text(cell: Cell, *, is_baseline: bool) -> str:
    parts = [_number(cell.value)]
    if cell.spread:
        parts.append(f"[{_number(cell.spread[0])}-{_number(cell.spread[1])}]")
    if not is_baseline and cell.ratio is not None:
        parts.append(f"x{cell.ratio:.2f}")
    if cell.outcome not in (None, BASELINE):
        parts.append(cell.outcome)
    return " ".join(parts)


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


#: The overlay charts of a comparison: chart key -> (sample column, label, unit).
CHARTS = {
    "throughput": ("consume_eps", "throughput (consumed)", "events/s"),
    "p99": ("p99_ms", "latency p99", "ms"),
    "depth": ("depth", "queue depth", "events"),
}


def comparison_chart_data(*, runs: Sequence[Run]) -> dict[str, Any]:
    """For each chart of ``CHARTS``: ``{label, unit, series}``, one series per run
    ``{name, run_id, t_s, values}`` over its own ``t_s`` (charts.js ``imqOverlayCharts`` aligns
    them). One samples query per run."""
    per_run = [(run, run_samples_columns(run_id=run.pk)) for run in runs]
    return {
        key: {
            "label": label,
            "unit": unit,
            "series": [
                {"name": f"run {run.pk} ({run.backend})", "run_id": run.pk, "t_s": cols["t_s"], "values": cols[column]}
                for run, cols in per_run
            ],
        }
        for key, (column, label, unit) in CHARTS.items()
    }
