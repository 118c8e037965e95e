"""Reads. Keyword-only, named ``<entity>_<action>``."""

from __future__ import annotations

from experiments.models import Run, RunSeries


def run_is_cancelled(*, run_id: int) -> bool:
    return Run.objects.filter(pk=run_id, status=Run.Status.CANCELLED).exists()


def series_is_cancelled(*, series_id: int) -> bool:
    return RunSeries.objects.filter(pk=series_id, status=RunSeries.Status.CANCELLED).exists()
