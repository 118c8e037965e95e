"""``python manage.py compareruns ID ID... [--baseline ID] [--json]``: stored runs side by side."""

from __future__ import annotations

import json

from experiments.management.base import BaseCommand, CommandError
from experiments.reports.compare import CompareError, comparison_as_dict, format_comparison, runs_compare
from experiments.selectors import RunsNotFound, runs_by_ids


class Command(BaseCommand):
    help = (
        "Print stored runs side by side: each figure, its ratio to the baseline run, the spread of repeat "
        "series, and whether a difference is larger than that spread."
    )

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="+", type=int, metavar="ID", help="run ids (two or more)")
        parser.add_argument(
            "--baseline", type=int, metavar="ID", help="the run the others are compared with (default: the first)"
        )
        parser.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")

    def handle(self, *args, **opts):
        try:
            comparison = runs_compare(runs=runs_by_ids(ids=opts["ids"]), baseline_id=opts["baseline"])
        except RunsNotFound as exc:
            raise CommandError(f"{exc}: give ids of stored runs (the admin's run list shows them)") from None
        except CompareError as exc:
            raise CommandError(str(exc)) from None
        if opts["json"]:
            self.stdout.write(json.dumps(comparison_as_dict(comparison), sort_keys=True))
        else:
            self.stdout.write(format_comparison(comparison))
