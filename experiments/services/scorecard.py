"""The delivery-guarantee scorecard: every backend under every fault, at a steady rate.

Each cell of the matrix is a backend and one fault (``KIND@T[:ARG]``), run ``repeats`` times as
short steady runs stored like any other run; the cells are one ``RunSeries`` of kind
``scorecard`` whose ``result`` holds each cell's figures (medians over its runs), and the table
``scorecard_markdown`` renders from it is what ``docs/results/scorecard.md`` shows
(``scorecard_page_write``: generated, never copied by hand). A fault a backend cannot take is a
cell with the reason, not a run.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings

from experiments.models import Run, RunSeries
from experiments.selectors import run_json_summary
from experiments.services.runs import experiment_get_or_create, run_execute, run_prepare
from experiments.services.series import series_end
from experiments.validation import spec_validate
from queues.backends import LIBRARY_BACKENDS
from queues.errors import InvalidSpec, QueueError
from queues.run.launch import check_alias, known_aliases
from queues.workload.faults import fault_parse
from queues.workload.spec import WorkloadSpec

EXPERIMENT = "scorecard"
#: The matrix's faults by default: each at 2 s into a run of ``BASE["duration_s"]`` seconds,
#: which leaves time to measure the recovery (3 s within 10% of the offered rate).
DEFAULT_FAULTS = (
    "kill-consumer@2",
    "kill-producer@2",
    "pause-consumer@2:2",
    "cut-connections@2",
    "restart-server@2",
    "restart-server@2:aof-always",
    "poison@2:10",
)
BASE: dict[str, Any] = {
    "rate_eps": 1000.0,
    "duration_s": 8.0,
    "producers": 1,
    "consumers": 2,
    "batch": 100,
    "idle_timeout_s": 5.0,
    "replace_after_s": 0.5,
}
#: A restart only shows what a server keeps when its queue holds something: both consumers are
#: paused around the restart (at 2 s), so that it holds about two seconds of the offered rate.
RESTART_BACKLOG = ("pause-consumer@1:2", "pause-consumer@1:2:1")
#: The docs' scorecard page, in the project; its table lies between these lines.
SCORECARD_PAGE = Path("docs/results/scorecard.md")
PAGE_BEGIN, PAGE_END = "<!-- scorecard:begin -->", "<!-- scorecard:end -->"
COUNTS = ("lost", "duplicates", "redelivered", "poison", "reconnects")


def default_backends() -> list[str]:
    """Every raw queue backend (the in-process approaches take no faults; the task libraries,
    at a few hundred tasks a second, could not keep the matrix's rate: name them with
    ``--backends``)."""
    return [alias for alias in known_aliases() if check_alias(alias) == "backend" and alias not in LIBRARY_BACKENDS]


def scorecard_plan(
    *, backends: Sequence[str], faults: Sequence[str], rate_eps: float, duration_s: float
) -> list[dict[str, Any]]:
    """The cells, in order: each with its spec (as a dict) or, for a fault the backend cannot
    take, the one-line reason. Raises ``InvalidSpec`` for an unknown backend or a fault text
    that does not parse, before anything runs."""
    for text in faults:
        fault_parse(text)
    cells = []
    for backend in backends:
        check_alias(backend)
        for fault in faults:
            backlog = list(RESTART_BACKLOG) if fault_parse(fault).kind == "restart-server" else []
            values = {
                **BASE,
                "rate_eps": rate_eps,
                "duration_s": duration_s,
                "backend": backend,
                "faults": [fault, *backlog],
            }
            try:
                spec = spec_validate(values=values)
            except InvalidSpec as exc:
                if exc.field != "faults":
                    raise
                cells.append({"backend": backend, "fault": fault, "spec": None, "not_applicable": _plain(str(exc))})
                continue
            cells.append({"backend": backend, "fault": spec.faults[0], "spec": spec.as_dict(), "not_applicable": None})
    return cells


def _plain(reason: str) -> str:
    """``fault restart-server@2: memory-mp ...`` -> ``memory-mp ...`` (the cell names the fault)."""
    return re.sub(r"^fault \S+: ", "", reason)


def scorecard_run(
    *,
    backends: Sequence[str],
    faults: Sequence[str],
    repeats: int = 1,
    rate_eps: float = BASE["rate_eps"],
    duration_s: float = BASE["duration_s"],
    on_cell: Callable[[dict[str, Any]], None] | None = None,
    interrupted: Callable[[], str | None] | None = None,
) -> RunSeries:
    """Run the matrix now, in this process, one run at a time; store it as a series and return
    it. ``on_cell`` is told each cell as it is done; ``interrupted`` (see ``run_execute``) stops
    the matrix, which then ends cancelled with the cells measured so far."""
    if not 1 <= repeats <= 20:
        raise InvalidSpec(f"repeats must be a whole number from 1 to 20, got {repeats!r}")
    cells = scorecard_plan(backends=backends, faults=faults, rate_eps=rate_eps, duration_s=duration_s)
    first = next((c["spec"] for c in cells if c["spec"]), None)
    spec = WorkloadSpec.from_mapping(first) if first else WorkloadSpec(**{**BASE, "backend": backends[0]})
    experiment = experiment_get_or_create(name=EXPERIMENT, spec=spec)
    series = RunSeries.objects.create(
        experiment=experiment,
        kind=RunSeries.Kind.SCORECARD,
        knob="backend x fault",
        values=[f"{c['backend']} {c['fault']}" for c in cells],
    )
    done: list[dict[str, Any]] = []
    status, error = RunSeries.Status.SUCCEEDED, ""
    for cell in cells:
        if cell["spec"] is not None:
            runs = []
            for _ in range(repeats):
                run = run_prepare(
                    spec=WorkloadSpec.from_mapping(cell["spec"]), experiment_name=EXPERIMENT, series=series
                )
                runs.append(run_execute(run=run, interrupted=interrupted))
                if runs[-1].status == Run.Status.CANCELLED:
                    break
            cell = {**cell, **cell_figures([run_json_summary(run=r) for r in runs], fault=cell["fault"])}
        done.append(cell)
        if on_cell:
            on_cell(cell)
        if cell.get("cancelled") or (interrupted and interrupted()):
            status, error = RunSeries.Status.CANCELLED, "the scorecard was interrupted"
            break
    result = {
        "series_id": series.pk,
        "repeats": repeats,
        "rate_eps": rate_eps,
        "duration_s": duration_s,
        "backends": list(backends),
        "faults": [fault_parse(f).text() for f in faults],
        "cells": done,
    }
    return series_end(series=series, status=status, error=error, result=result)


def cell_figures(summaries: Sequence[dict[str, Any]], *, fault: str) -> dict[str, Any]:
    """A cell's figures from its runs' summaries: the median of each count and of the time to
    recover from ``fault`` (``None`` when a run did not recover), every verdict and status, and
    every contradiction of the declared guarantee found in any run."""
    fault_reports = [next((f for f in s.get("faults") or [] if f.get("fault") == fault), {}) for s in summaries]
    recovered = [f.get("recovered_after_s") for f in fault_reports]
    figures: dict[str, Any] = {
        "runs": [s.get("run_id") for s in summaries],
        "statuses": sorted({s.get("status", "") for s in summaries}),
        "verdicts": sorted({s.get("verdict") or "-" for s in summaries}),
        "guarantee": next((s["guarantee"] for s in summaries if s.get("guarantee")), None),
        "outcome": next((f.get("outcome") for f in fault_reports if f.get("outcome")), None),
        "errors": sorted({s["error"] for s in summaries if s.get("error")}),
        "contradictions": sorted({c for s in summaries for c in s.get("contradictions") or []}),
        "recovered_after_s": None
        if any(r is None for r in recovered) or not recovered
        else statistics.median(recovered),
        "cancelled": any(s.get("status") == Run.Status.CANCELLED for s in summaries),
    }
    for name in COUNTS:
        values = [s.get(name) for s in summaries if s.get(name) is not None]
        figures[name] = statistics.median(values) if values else None
    return figures


def scorecard_markdown(result: dict[str, Any]) -> str:
    """The scorecard as a Markdown table, one row a cell, with how it was measured."""
    lines = [
        f"Each cell: a steady run of {result['rate_eps']:g} events/s for {result['duration_s']:g} s "
        f"(1 producer, 2 consumers), the fault at its time (a restart with both consumers paused from 1 s to 3 s, "
        f"so that the queue holds a backlog); median of {result['repeats']} run(s). "
        f"Series {result['series_id']}, generated by `python manage.py scorecard --write-docs`.",
        "",
        "| backend | fault | guarantee | verdict | lost | duplicated | redelivered | poison set aside | "
        "recovered after | reconnects | consistent with its guarantee |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for cell in result["cells"]:
        if cell.get("not_applicable"):
            lines.append(f"| `{cell['backend']}` | `{cell['fault']}` | | n/a | | | | | | | {cell['not_applicable']} |")
            continue
        verdict = "/".join(cell["verdicts"])
        if cell["statuses"] != [Run.Status.SUCCEEDED]:
            verdict += f" ({'/'.join(cell['statuses'])}: {'; '.join(cell['errors'])})"
        recovered = "not within the run" if cell["recovered_after_s"] is None else f"{cell['recovered_after_s']:g} s"
        consistent = "yes" if not cell["contradictions"] else "**no**: " + "; ".join(cell["contradictions"])
        counts = " | ".join(_count(cell.get(name)) for name in ("lost", "duplicates", "redelivered", "poison"))
        lines.append(
            f"| `{cell['backend']}` | `{cell['fault']}` | {cell['guarantee'] or ''} | {verdict} | {counts} | "
            f"{recovered} | {_count(cell.get('reconnects'))} | {consistent} |"
        )
    return "\n".join(lines) + "\n"


def _count(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def scorecard_page_write(*, markdown: str, path: Path | None = None) -> Path:
    """Put ``markdown`` between the scorecard page's lines (``PAGE_BEGIN``/``PAGE_END``; the page
    is ``SCORECARD_PAGE`` by default), replacing what was there and keeping the text around it.
    Raises ``QueueError`` when the page has no such lines."""
    path = path or Path(settings.BASE_DIR) / SCORECARD_PAGE
    text = path.read_text()
    begin, end = text.find(PAGE_BEGIN), text.find(PAGE_END)
    if begin < 0 or end < begin:
        raise QueueError(f"{path} has no {PAGE_BEGIN} ... {PAGE_END} lines to write the scorecard between")
    path.write_text(text[: begin + len(PAGE_BEGIN)] + "\n" + markdown + text[end:])
    return path
