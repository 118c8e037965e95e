"""Execute one launched (queued) run in the foreground: what a cluster worker does with it."""

from __future__ import annotations

from experiments.execution.interrupts import Interrupts
from experiments.execution.run_lock import one_run_at_a_time
from experiments.management.base import BaseCommand, CommandError
from experiments.models import Run
from experiments.reports.text import format_report
from experiments.services.cleanup import runs_mark_stale
from experiments.services.launches import series_refresh
from experiments.services.runs import run_execute


class Command(BaseCommand):
    help = (
        "Execute queued run ID now, in this process, and print its report: what a django-q2 cluster does "
        "with a run launched from the admin or by launchrun. Waits while another run executes on this "
        "machine. A run that is not queued (cancelled, already executed) is left as it is. "
        "Ctrl-C or SIGTERM cancels the run cleanly."
    )

    def add_arguments(self, parser):
        parser.add_argument("run_id", type=int, metavar="ID", help="the queued run's id")

    def handle(self, *args, **opts):
        run = Run.objects.filter(pk=opts["run_id"]).select_related("experiment").first()
        if run is None:
            raise CommandError(f"there is no run {opts['run_id']}")
        if run.status != Run.Status.QUEUED:
            raise CommandError(f"run {run.pk} is {run.status}, not queued: only a queued run is executed")
        interrupts = Interrupts()
        with (
            interrupts.caught(),
            one_run_at_a_time(
                on_wait=lambda: self.stderr.write(f"run {run.pk} waits: another run is executing on this machine")
            ),
        ):
            runs_mark_stale()  # a run whose executor died before this one took the machine
            try:
                run = run_execute(run=run, interrupted=interrupts)
            except KeyboardInterrupt:
                raise CommandError("interrupted twice: stopped at once; the run is stored as failed") from None
            finally:
                if run.series_id:
                    series_refresh(series=run.series)
        self.stdout.write(format_report(run))
        if run.status != Run.Status.SUCCEEDED:
            raise CommandError(f"run {run.pk} {run.status}: {run.error}")
