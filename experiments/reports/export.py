"""Runs and their samples as JSON (the ``--json`` schema plus ``samples``) or CSV (one row per
sample). Each format has a generator of chunks, one run at a time, for a streaming response, and
a function that joins them for a command or a test."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from typing import Any

from experiments.models import Run
from experiments.selectors import SAMPLE_COLUMNS, run_json_summary, run_samples_columns

#: The leading CSV columns, the same on every row of a run: which run and its headline figures.
RUN_COLUMNS = (
    "run_id",
    "experiment",
    "backend",
    "status",
    "verdict",
    "throughput_eps",
    "latency_p50_ms",
    "latency_p99_ms",
)
CSV_HEADER = (*RUN_COLUMNS, *SAMPLE_COLUMNS)


def runs_export_json(*, runs: Sequence[Run]) -> str:
    """A JSON array: for each run its ``runexperiment --json`` object plus ``samples``, a list
    of ``{t_s, produce_eps, ...}`` (``selectors.SAMPLE_COLUMNS``) ordered by ``t_s``."""
    return "".join(runs_export_json_chunks(runs=runs))


def runs_export_json_chunks(*, runs: Sequence[Run]) -> Iterator[str]:
    yield "["
    for i, run in enumerate(runs):
        item = {**run_json_summary(run=run), "samples": _sample_rows(run)}
        yield ("," if i else "") + json.dumps(item, sort_keys=True)
    yield "]\n"


def _sample_rows(run: Run) -> list[dict[str, Any]]:
    columns = run_samples_columns(run_id=run.pk)
    return [dict(zip(SAMPLE_COLUMNS, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def runs_export_csv(*, runs: Sequence[Run]) -> str:
    """CSV with a header row (``CSV_HEADER``), then one row per sample, led by the run's
    identifying figures (``RUN_COLUMNS``). A run without samples still gets one row, its sample
    columns empty. Missing values are empty cells."""
    return "".join(runs_export_csv_chunks(runs=runs))


def runs_export_csv_chunks(*, runs: Sequence[Run]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    yield _drain(buffer)
    for run in runs:
        lead = [
            run.pk,
            run.experiment.name,
            run.backend,
            run.status,
            run.verdict,
            run.throughput_eps,
            run.latency_p50_ms,
            run.latency_p99_ms,
        ]
        columns = run_samples_columns(run_id=run.pk)
        columns["markers"] = [json.dumps(m) if m else None for m in columns["markers"]]  # one cell: JSON text
        rows = list(zip(*columns.values(), strict=True)) or [(None,) * len(SAMPLE_COLUMNS)]
        writer.writerows([*lead, *row] for row in rows)  # the csv module writes None as ""
        yield _drain(buffer)


def _drain(buffer: io.StringIO) -> str:
    """What was written since the last drain; the buffer is emptied so a chunk holds one run."""
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
