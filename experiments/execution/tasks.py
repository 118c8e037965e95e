"""django-q2 tasks: what a cluster worker executes.

A launched run executes in a process of its own (``manage.py executerun``), not in the worker:
django-q2's workers are daemonic processes, which may not fork the run's worker processes, and a
fresh process gives every run the same start (the foreground ``runexperiment`` path, the one
the benchmarks measure). The child dies with the cluster worker (SIGTERM through
``PR_SET_PDEATHSIG``, which cancels the run cleanly: its counts are stored and its queue
removed), and a Ctrl-C on the cluster's terminal reaches it too and does the same.
"""

from __future__ import annotations

import subprocess
import sys

from django.conf import settings

from experiments.models import Run
from experiments.services.runs import run_fail
from queues.workers.lifeline import die_with_parent


def run_task(run_id: int) -> str:
    """Execute launched run ``run_id``; what the task's result records in django-q2."""
    command = [sys.executable, str(settings.BASE_DIR / "manage.py"), "executerun", str(run_id)]
    completed = subprocess.run(command, preexec_fn=die_with_parent, check=False)  # noqa: PLW1509
    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        return f"run {run_id}: deleted"
    if run.status == Run.Status.RUNNING:  # killed or crashed before it could store its end
        run = run_fail(run=run, error=f"its executor process ended with status {completed.returncode} "
                                      "before the run could store its end; launch it again")
    outcome = f"run {run_id} {run.status}" + (f" ({run.verdict})" if run.verdict else "")
    if completed.returncode not in (0, 1):  # 1: the run failed or was cancelled, and says so
        outcome += f"; its executor exited with status {completed.returncode}"
    return outcome


def host_share_task(share_id: int) -> str:
    """On a load host: run its share ``share_id`` of a distributed run, in a process of its own
    (``manage.py hostshare``) for the same reasons as ``run_task``; it dies with this worker."""
    command = [sys.executable, str(settings.BASE_DIR / "manage.py"), "hostshare", str(share_id)]
    completed = subprocess.run(command, preexec_fn=die_with_parent, check=False,  # noqa: PLW1509
                               capture_output=True, text=True)
    return (completed.stdout.strip() or f"share {share_id}") + (
        f"; exited with status {completed.returncode}: {completed.stderr[-500:]}" if completed.returncode else "")
