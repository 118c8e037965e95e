"""Reads. Keyword-only, named ``<entity>_<action>``."""

from __future__ import annotations

from django.db.models import QuerySet

from experiments.models import Run, RunSeries, Sample


def run_get(*, run_id: int) -> Run:
    return Run.objects.select_related("experiment").get(pk=run_id)


def run_samples(*, run: Run) -> QuerySet[Sample]:
    return run.samples.order_by("t_s")


def run_is_cancelled(*, run_id: int) -> bool:
    return Run.objects.filter(pk=run_id, status=Run.Status.CANCELLED).exists()


def series_is_cancelled(*, series_id: int) -> bool:
    return RunSeries.objects.filter(pk=series_id, status=RunSeries.Status.CANCELLED).exists()
