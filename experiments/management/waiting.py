"""Waiting in a terminal for launched runs to end (``launchrun --wait``, ``sweep --wait``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from experiments.models import Run
from experiments.services.cleanup import runs_mark_stale

POLL_S = 0.5
#: A run still queued this long after its launch most likely has no cluster to execute it.
NO_CLUSTER_HINT_S = 10.0


def runs_wait(*, run_ids: Sequence[int], on_end: Callable[[Run], None], on_note: Callable[[str], None]) -> list[Run]:
    """Poll until every run of ``run_ids`` has ended, calling ``on_end`` for each as it ends
    (in launch order) and ``on_note`` once if they wait long for a cluster. Returns the runs."""
    pending, ended, began, hinted = list(run_ids), {}, time.monotonic(), False
    while pending:
        runs_mark_stale()  # an executor that died must not keep us waiting for ever
        for run in Run.objects.filter(pk__in=pending, finished_at__isnull=False).select_related("experiment"):
            ended[run.pk] = run
        while pending and pending[0] in ended:
            on_end(ended[pending.pop(0)])
        if not pending:
            break
        if not hinted and time.monotonic() - began > NO_CLUSTER_HINT_S:
            if Run.objects.filter(pk__in=pending, status=Run.Status.RUNNING).count() == 0:
                hinted = True
                on_note(
                    f"run {pending[0]} is still queued: is a cluster running? Start one with "
                    "`python manage.py qcluster` (the runs wait for it; Ctrl-C stops waiting, not the runs)"
                )
        time.sleep(POLL_S)
    return [ended[pk] for pk in run_ids]
