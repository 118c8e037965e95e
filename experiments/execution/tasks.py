"""django-q2 tasks: what a cluster worker executes.

A launched run executes in a process of its own (``manage.py executerun``), not in the worker:
django-q2's workers are daemonic processes, which may not fork the run's worker processes, and a
fresh process gives every run the same start (the foreground ``runexperiment`` path, the one
the benchmarks measure). The child dies with the cluster worker (SIGTERM through
``PR_SET_PDEATHSIG``, which cancels the run cleanly: its counts are stored and its queue
removed), and a Ctrl-C on the cluster's terminal reaches it too and does the same.

Stale runs (``services.cleanup.runs_mark_stale``: their executor died) are found here, not by
the pages, which only read: before each run, and every minute by ``stale_runs_task``, which the
main cluster runs from the ``Schedule`` row of migration 0011 (a schedule with no cluster is
run by the default cluster only, never by a load host's).
"""

from __future__ import annotations

import subprocess
import sys

from django.conf import settings

from experiments.models import Run
from experiments.services.cleanup import runs_mark_stale
from experiments.services.runs import run_fail
from queues.workers.lifeline import die_with_parent


def run_task(run_id: int) -> str:
    """Execute launched run ``run_id``; what the task's result records in django-q2."""
    runs_mark_stale()  # cheap; the executor does it again once it holds the machine
    command = [sys.executable, str(settings.BASE_DIR / "manage.py"), "executerun", str(run_id)]
    completed = subprocess.run(command, preexec_fn=die_with_parent, check=False)  # noqa: PLW1509
    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        return f"run {run_id}: deleted"
    if run.status == Run.Status.RUNNING:  # killed or crashed before it could store its end
        run = run_fail(
            run=run,
            error=f"its executor process ended with status {completed.returncode} "
            "before the run could store its end; launch it again",
        )
    outcome = f"run {run_id} {run.status}" + (f" ({run.verdict})" if run.verdict else "")
    if completed.returncode not in (0, 1):  # 1: the run failed or was cancelled, and says so
        outcome += f"; its executor exited with status {completed.returncode}"
    return outcome


def host_share_task(share_id: int) -> str:
    """On a load host: run its share ``share_id`` of a distributed run, in a process of its own
    (``manage.py hostshare``) for the same reasons as ``run_task``; it dies with this worker."""
    command = [sys.executable, str(settings.BASE_DIR / "manage.py"), "hostshare", str(share_id)]
    completed = subprocess.run(
        command,
        preexec_fn=die_with_parent,
        check=False,  # noqa: PLW1509
        capture_output=True,
        text=True,
    )
    return (completed.stdout.strip() or f"share {share_id}") + (
        f"; exited with status {completed.returncode}: {completed.stderr[-500:]}" if completed.returncode else ""
    )


def stale_runs_task() -> str:
    """Mark failed the runs whose executor died (see ``runs_mark_stale``); what the task's
    result records in django-q2. The cluster runs it every minute (migration 0011)."""
    stale = runs_mark_stale()
    return f"marked failed: runs {', '.join(map(str, stale))}" if stale else "no stale run"
