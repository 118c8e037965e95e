"""``python manage.py scorecard``: every backend under every fault; prints the table, stores the
series, and with ``--write-docs`` puts the table in the docs' scorecard page."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings

from experiments.execution.interrupts import Interrupts
from experiments.execution.run_lock import one_run_at_a_time
from experiments.management.base import BaseCommand, CommandError
from experiments.models import RunSeries
from experiments.services.scorecard import (
    BASE,
    DEFAULT_FAULTS,
    SCORECARD_PAGE,
    default_backends,
    scorecard_markdown,
    scorecard_page_write,
    scorecard_plan,
    scorecard_run,
)
from queues.errors import QueueError


class Command(BaseCommand):
    help = (
        "Run the matrix of backends x faults at a steady rate (a few seconds a cell), store it as a "
        f"series, print the table; --write-docs puts it in {SCORECARD_PAGE} between its scorecard lines."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--backends", help=f"comma-separated (default: every queue backend: {', '.join(default_backends())})"
        )
        parser.add_argument("--faults", help=f"comma-separated KIND@T[:ARG] (default: {', '.join(DEFAULT_FAULTS)})")
        parser.add_argument("--repeat", type=int, default=1, help="runs per cell; the table shows medians (default 1)")
        parser.add_argument(
            "--rate", type=float, default=BASE["rate_eps"], help="offered events/s (default %(default)g)"
        )
        parser.add_argument(
            "--duration", type=float, default=BASE["duration_s"], help="seconds a run (default %(default)g)"
        )
        parser.add_argument(
            "--write-docs",
            nargs="?",
            const="",
            metavar="PATH",
            help=f"write the table into this page (default: the project's {SCORECARD_PAGE}) between its marker lines",
        )
        parser.add_argument("--dry-run", action="store_true", help="list the cells and what cannot run, run nothing")
        parser.add_argument("--json", action="store_true", help="print the series' result as JSON")

    def handle(self, *args, **opts):
        backends = _split(opts["backends"]) or default_backends()
        faults = _split(opts["faults"]) or list(DEFAULT_FAULTS)
        page = None
        if opts["write_docs"] is not None:  # "": the flag alone, the project's page wherever this runs
            page = Path(opts["write_docs"] or Path(settings.BASE_DIR) / SCORECARD_PAGE)
            if not page.is_file():
                raise CommandError(f"--write-docs {page}: no such file; give the scorecard page's path")
        try:
            plan = scorecard_plan(backends=backends, faults=faults, rate_eps=opts["rate"], duration_s=opts["duration"])
        except QueueError as exc:
            raise CommandError(str(exc)) from None
        runnable = [c for c in plan if c["spec"]]
        self.stderr.write(
            f"scorecard: {len(plan)} cells, {len(runnable)} to run x {opts['repeat']} "
            f"(about {len(runnable) * opts['repeat'] * (opts['duration'] + 4) / 60:.0f} min)"
        )
        if opts["dry_run"]:
            for cell in plan:
                self.stdout.write(f"  {cell['backend']:<18} {cell['fault']:<28} {cell['not_applicable'] or 'runs'}")
            return
        interrupts = Interrupts()
        with (
            interrupts.caught(),
            one_run_at_a_time(on_wait=lambda: self.stderr.write("waits for the run executing now")),
        ):
            try:
                series = scorecard_run(
                    backends=backends,
                    faults=faults,
                    repeats=opts["repeat"],
                    rate_eps=opts["rate"],
                    duration_s=opts["duration"],
                    on_cell=self._progress,
                    interrupted=interrupts,
                )
            except QueueError as exc:
                raise CommandError(str(exc)) from None
        markdown = scorecard_markdown(series.result)
        self.stdout.write(json.dumps(series.result, sort_keys=True) if opts["json"] else markdown)
        if page is not None:
            scorecard_page_write(markdown=markdown, path=page)
            self.stderr.write(f"wrote the scorecard (series {series.pk}) into {page}")
        if series.status != RunSeries.Status.SUCCEEDED:
            raise CommandError(f"series {series.pk} {series.status}: {series.error}")

    def _progress(self, cell):
        if cell.get("not_applicable"):
            text = f"n/a: {cell['not_applicable']}"
        else:
            text = f"{'/'.join(cell['verdicts'])}, lost {cell['lost']}, duplicated {cell['duplicates']}"
            if cell["contradictions"]:
                text += "; CONTRADICTS ITS GUARANTEE: " + "; ".join(cell["contradictions"])
        self.stderr.write(f"  {cell['backend']:<18} {cell['fault']:<28} {text}")


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]
