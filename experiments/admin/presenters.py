"""What the admin pages show, shaped for their templates: numbers with units, a run's key figures,
the compare table's rows, a series' points and spread. Reads only; no Django admin import, so
``admin.py`` stays a list of thin edges."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from django.urls import reverse
from django.utils.html import format_html, format_html_join

from experiments.models import Experiment, Run, RunSeries
from experiments.reports.compare import BASELINE, BETTER, NO_SPREAD, NO_VALUE, SAME, WITHIN_SPREAD, WORSE

LIVE = (Run.Status.QUEUED, Run.Status.RUNNING)
#: CSS class of each compare outcome: a difference within the repeats' spread is not a win.
OUTCOME_CLASSES = {
    BETTER: "imq-better",
    WORSE: "imq-worse",
    WITHIN_SPREAD: "imq-within",
    NO_SPREAD: "imq-nospread",
    SAME: "imq-same",
    NO_VALUE: "imq-novalue",
    BASELINE: "imq-baseline",
}
#: The figures of a run's page and of a repeat series: (label, path in the --json summary, unit).
KEY_FIGURES = (
    ("verdict", ("verdict",), ""),
    ("events", ("events",), ""),
    ("unique", ("unique",), "events"),
    ("duplicates", ("duplicates",), "events"),
    ("lost", ("lost",), "events"),
    ("drain time", ("duration_s",), "s"),
    ("throughput", ("throughput_eps",), "events/s"),
    ("latency p50", ("latency_ms", "p50"), "ms"),
    ("latency p90", ("latency_ms", "p90"), "ms"),
    ("latency p99", ("latency_ms", "p99"), "ms"),
    ("latency p99.9", ("latency_ms", "p999"), "ms"),
    ("latency max", ("latency_ms", "max"), "ms"),
)


def number(value: Any, unit: str = "") -> str:
    """``12,345`` / ``1.234 ms`` / ``-`` for a missing value."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    text = f"{value:,}" if isinstance(value, int) else (f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}")
    return f"{text} {unit}".rstrip()


def pretty_json(value: Any) -> str:
    return format_html('<pre class="imq-json">{}</pre>', json.dumps(value, indent=2, sort_keys=True, default=str))


def _dig(data: dict[str, Any] | None, keys: Sequence[str]) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def summary_html(run: Run) -> str:
    """The run's key figures as a small table, then its whole summary folded away."""
    if not run.summary:
        return "no summary yet" if run.status in LIVE else "no summary (the run ended before it measured anything)"
    rows = format_html_join(
        "",
        "<tr><th>{}</th><td>{}</td></tr>",
        ((label, number(_dig(run.summary, keys), unit)) for label, keys, unit in KEY_FIGURES),
    )
    return format_html(
        '<table class="imq-figures">{}</table>{}<details><summary>whole summary</summary>{}</details>',
        rows,
        faults_html(run.summary),
        pretty_json(run.summary),
    )


def faults_html(summary: dict[str, Any]) -> str:
    """The run's faults (``summary["faults"]``): when each was due and applied, its outcome and
    the time to recover, then the reconnects and replacements they caused; empty without faults."""
    faults = summary.get("faults") or []
    if not faults:
        return ""

    def recovered(fault: dict[str, Any]) -> str:
        if fault.get("applied_at_s") is None:
            return "-"
        seconds = fault.get("recovered_after_s")
        return "not within the run" if seconds is None else f"{seconds:g} s"

    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                f["fault"],
                f["target"],
                number(f.get("applied_at_s"), "s"),
                f.get("outcome") or "not reached",
                recovered(f),
            )
            for f in faults
        ),
    )
    return format_html(
        '<h3>Faults</h3><table class="imq-faults"><tr><th>fault</th><th>on</th><th>applied at</th><th>outcome</th>'
        "<th>recovered after</th></tr>{}</table><p>{} reconnect(s), {} worker(s) replaced; producers may have sent "
        "up to {} event(s) twice.</p>",
        rows,
        summary.get("reconnects", 0),
        summary.get("replaced_workers", 0),
        summary.get("resend_bound", 0),
    )


def parse_ids(text: str) -> list[int]:
    """``"3,1,2"`` -> ``[3, 1, 2]``; ``ValueError`` naming what is not a run id."""
    ids = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if not part.isdigit():
            raise ValueError(f"{part!r} is not a run id")
        ids.append(int(part))
    return ids


def selected_ids(posted: Iterable[str], queryset) -> list[int]:
    """The selected rows in the page's order (the first is the compare baseline), then any
    others "select all" took in."""
    chosen = set(queryset.values_list("pk", flat=True))
    ordered = [int(pk) for pk in posted if pk.isdigit() and int(pk) in chosen]
    return ordered + sorted(chosen - set(ordered))


def launched_message(experiment: Experiment, runs: Sequence[Run]) -> str:
    ids = ", ".join(str(r.pk) for r in runs)
    if runs[0].series_id:
        url = reverse("admin:experiments_runseries_change", args=[runs[0].series_id])
        return format_html(
            '{}: {} runs queued ({}) as <a href="{}">repeat series {}</a>; the cluster executes them one at a time.',
            experiment,
            len(runs),
            ids,
            url,
            runs[0].series_id,
        )
    url = reverse("admin:experiments_run_change", args=[runs[0].pk])
    return format_html('{}: <a href="{}">run {}</a> queued; the cluster executes it.', experiment, url, runs[0].pk)


def compare_rows(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure: its label with unit, and per run the value, spread, ratio to the
    baseline and the outcome with its CSS class."""
    rows = []
    for figure in comparison["figures"]:
        cells = []
        for run in comparison["runs"]:
            cell = run["figures"][figure["key"]]
            spread = cell["spread"]
            cells.append(
                {
                    "value": number(cell["value"]),
                    "baseline": run["baseline"],
                    "spread": f"{number(spread['min'])} to {number(spread['max'])}" if spread else "",
                    "ratio": f"x{cell['ratio']:.2f}" if cell["ratio"] is not None and not run["baseline"] else "",
                    "outcome": cell["outcome"] if cell["outcome"] not in (None, BASELINE) else "",
                    "css": OUTCOME_CLASSES.get(cell["outcome"] or "", ""),
                }
            )
        rows.append({"label": figure["label"], "unit": figure["unit"], "cells": cells})
    return rows


def series_context(series: RunSeries) -> dict[str, Any]:
    """What a series' page shows: its runs (columns only), and for a sweep its points and the
    XY chart's data, for a repeat the median, min and max of the key figures."""
    runs = list(
        series.runs.order_by("pk").only(
            "pk",
            "status",
            "verdict",
            "throughput_eps",
            "latency_p50_ms",
            "latency_p99_ms",
            "lost",
            "duplicates",
            "series_id",
        )
    )
    result = series.result or {}
    context: dict[str, Any] = {
        "series": series,
        "series_runs": runs,
        "series_live": series.status == RunSeries.Status.RUNNING,
    }
    if series.kind == RunSeries.Kind.SWEEP:
        points = result.get("points") or _points_so_far(series.values, runs)
        context["points"] = [
            {**p, "throughput": number(p.get("throughput_eps")), "p99": number(p.get("p99_ms"), "ms")} for p in points
        ]
        context["xy_data"] = sweep_chart_data(knob=series.knob, points=points) if points else None
    elif series.kind == RunSeries.Kind.SCORECARD:
        context["scorecard_rows"] = scorecard_rows(result.get("cells") or [])
    elif result.get("median"):
        context["spread_rows"] = [
            {"label": label, "unit": unit, **{k: number(_dig(result.get(k), keys)) for k in ("median", "min", "max")}}
            for label, keys, unit in KEY_FIGURES
            if _dig(result.get("median"), keys) is not None
        ]
    return context


def scorecard_rows(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A scorecard's cells as the series page shows them: figures formatted, a cell the
    backend cannot take with its reason."""
    rows = []
    for cell in cells:
        if cell.get("not_applicable"):
            rows.append({"backend": cell["backend"], "fault": cell["fault"], "na": cell["not_applicable"]})
            continue
        recovered = cell.get("recovered_after_s")
        rows.append(
            {
                "backend": cell["backend"],
                "fault": cell["fault"],
                "guarantee": cell.get("guarantee") or "",
                "verdict": "/".join(cell.get("verdicts") or []),
                "statuses": "/".join(cell.get("statuses") or []),
                "errors": "; ".join(cell.get("errors") or []),
                **{
                    name: number(cell.get(name))
                    for name in ("lost", "duplicates", "redelivered", "poison", "reconnects")
                },
                "recovered": "not within the run" if recovered is None else number(recovered, "s"),
                "contradictions": cell.get("contradictions") or [],
                "runs": cell.get("runs") or [],
            }
        )
    return rows


def _points_so_far(values: Sequence[Any], runs: Sequence[Run]) -> list[dict[str, Any]]:
    """A sweep's points before the executor first refreshed its result: each value and its run."""
    return [
        {
            "value": value,
            "run_id": run.pk,
            "status": run.status,
            "verdict": run.verdict or None,
            "throughput_eps": run.throughput_eps,
            "p99_ms": run.latency_p99_ms,
        }
        for value, run in zip(values, runs, strict=False)
    ]


def sweep_chart_data(*, knob: str, points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``imqXYChart``'s data: events/s (left axis) and p99 (right) against the knob's values. A
    knob with text values (a string option) is drawn against the values' order."""
    numeric = all(isinstance(p["value"], (int, float)) and not isinstance(p["value"], bool) for p in points)
    xs = [p["value"] if numeric else i for i, p in enumerate(points)]
    return {
        "title": f"events/s and p99 against {knob}",
        "x": {"label": knob if numeric else f"{knob} (value number)", "unit": "", "values": xs},
        "y": [
            {"label": "throughput", "unit": "events/s", "values": [p.get("throughput_eps") for p in points]},
            {"label": "latency p99", "unit": "ms", "values": [p.get("p99_ms") for p in points]},
        ],
    }
