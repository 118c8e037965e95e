"""Cancel launched runs, as the admin's Cancel does."""

from __future__ import annotations

from experiments.management.base import BaseCommand, CommandError
from experiments.models import Run
from experiments.services.launches import run_stop


class Command(BaseCommand):
    help = (
        "Cancel runs by id: a queued run never starts; a running one stops within 2 s and is stored as "
        "cancelled with what it counted. A run that already ended is left unchanged (exit 1)."
    )

    def add_arguments(self, parser):
        parser.add_argument("run_ids", nargs="+", type=int, metavar="ID", help="the runs' ids")

    def handle(self, *args, **opts):
        refused = []
        for run_id in opts["run_ids"]:
            run = Run.objects.filter(pk=run_id).first()
            if run is None:
                refused.append(f"there is no run {run_id}")
                continue
            done, message = run_stop(run=run)
            (self.stdout.write if done else refused.append)(message)
        if refused:
            raise CommandError("; ".join(refused))
