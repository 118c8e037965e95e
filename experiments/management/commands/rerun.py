"""Launch a run's spec again, as the admin's Re-run does."""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError

from experiments.management.base import BaseCommand, CommandError
from experiments.management.commands.launchrun import report_runs, validation_message
from experiments.models import Run
from experiments.services.launches import run_rerun


class Command(BaseCommand):
    help = (
        "Launch the spec run ID ran (its own copy, not the experiment's current definition) again on the "
        "django-q2 cluster, as a new run of the same experiment. --wait waits for it and prints its report."
    )

    def add_arguments(self, parser):
        parser.add_argument("run_id", type=int, metavar="ID", help="the id of the run whose spec runs again")
        parser.add_argument("--wait", action="store_true", help="wait for the run and print its report")
        parser.add_argument(
            "--json", action="store_true", help="print the new run's id (with --wait: its --json object)"
        )

    def handle(self, *args, **opts):
        run = Run.objects.filter(pk=opts["run_id"]).select_related("experiment").first()
        if run is None:
            raise CommandError(f"there is no run {opts['run_id']}")
        try:
            again = run_rerun(run=run)
        except ValidationError as exc:
            raise CommandError(f"cannot re-run run {run.pk}: {validation_message(exc)}") from None
        if not opts["json"]:
            self.stdout.write(f"launched run {again.pk}: run {run.pk}'s spec again")
        if opts["wait"]:
            report_runs(self, [again.pk], as_json=opts["json"])
        elif opts["json"]:
            self.stdout.write(json.dumps({"run_ids": [again.pk], "series_id": None}))
