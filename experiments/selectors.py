"""Reads. Keyword-only, named ``<entity>_<action>``."""

from __future__ import annotations

from experiments.models import Run


def run_is_cancelled(*, run_id: int) -> bool:
    return Run.objects.filter(pk=run_id, status=Run.Status.CANCELLED).exists()
