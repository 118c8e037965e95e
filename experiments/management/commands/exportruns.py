"""``python manage.py exportruns ID... --format csv|json [--output FILE]``: runs and their samples."""

from __future__ import annotations

from experiments.management.base import BaseCommand, CommandError
from experiments.reports.export import runs_export_csv_chunks, runs_export_json_chunks
from experiments.selectors import RunsNotFound, runs_by_ids

EXPORTERS = {"csv": runs_export_csv_chunks, "json": runs_export_json_chunks}


class Command(BaseCommand):
    help = (
        "Write stored runs and their samples: json, an array of the runexperiment --json objects each with its "
        "samples; csv, one row per sample led by the run's figures."
    )

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="+", type=int, metavar="ID", help="run ids")
        parser.add_argument("--format", required=True, choices=sorted(EXPORTERS))
        parser.add_argument("--output", metavar="FILE", help="write to FILE instead of stdout")

    def handle(self, *args, **opts):
        try:
            runs = runs_by_ids(ids=opts["ids"])
        except RunsNotFound as exc:
            raise CommandError(f"{exc}: give ids of stored runs (the admin's run list shows them)") from None
        chunks = EXPORTERS[opts["format"]](runs=runs)
        if opts["output"]:
            try:
                # newline="": the csv module writes its own \r\n line ends
                with open(opts["output"], "w", encoding="utf-8", newline="") as out:
                    out.writelines(chunks)
            except OSError as exc:
                raise CommandError(f"cannot write {opts['output']}: {exc.strerror}") from None
        else:
            for chunk in chunks:
                self.stdout.write(chunk, ending="")
