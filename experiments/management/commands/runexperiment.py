"""``python manage.py runexperiment``: run one experiment now, store it, print the report."""

from __future__ import annotations

import json
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from experiments import services
from experiments.report import format_report
from queues.errors import InvalidSpec, QueueError
from queues.launch import known_aliases

DEFAULT_EXPERIMENT = "cli"


class Command(BaseCommand):
    help = "Send the integers 1..N through a queue backend, check the sum, store and print the run."

    def add_arguments(self, parser):
        parser.add_argument("--backend", default="memory-mp", help=f"one of: {', '.join(known_aliases())}")
        parser.add_argument("--events", default="1000000", help="how many integers (N), e.g. 1000000 or 1e6")
        parser.add_argument("--producers", default="1")
        parser.add_argument("--consumers", default="1")
        parser.add_argument("--events-per-message", default="1", help="events packed in one queue message")
        parser.add_argument("--batch", default="1000", help="messages per send or receive call")
        parser.add_argument("--idle-timeout", default="10", help="seconds without progress before the rest counts as lost")
        parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="backend option (repeatable)")
        parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="store the run under this experiment (created if missing)")
        parser.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")

    def handle(self, *args, **opts):
        try:
            options = _parse_options(opts["option"])
            spec = services.spec_validate(values={
                "backend": opts["backend"], "events": opts["events"], "producers": opts["producers"],
                "consumers": opts["consumers"], "events_per_message": opts["events_per_message"],
                "batch": opts["batch"], "idle_timeout_s": opts["idle_timeout"],
            }, options=options)
        except QueueError as exc:
            raise CommandError(str(exc)) from None
        run = services.run_prepare(spec=spec, experiment_name=opts["experiment"], options=options)
        progress = _ProgressBar(sys.stderr) if sys.stderr.isatty() else None
        run = services.run_execute(run=run, on_progress=progress)
        if progress:
            progress.close()
        if opts["json"]:
            self.stdout.write(json.dumps(_json_summary(run), sort_keys=True))
        else:
            self.stdout.write(format_report(run))
        if run.status != "succeeded":
            raise CommandError(f"run {run.pk} {run.status}: {run.error}")


def _parse_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InvalidSpec(f"--option takes NAME=VALUE, got {pair!r}")
        options[name.strip().replace("-", "_")] = value.strip()
    return options


def _json_summary(run) -> dict:
    summary = dict(run.summary) if run.summary else {"run_id": run.pk, "backend": run.backend}
    summary.setdefault("environment", run.environment)
    summary["status"], summary["error"] = run.status, run.error or None
    return summary


class _ProgressBar:
    """A one-line bar on a terminal, redrawn at most ten times a second."""

    def __init__(self, stream, width: int = 30) -> None:
        self.stream, self.width, self.last = stream, width, 0.0
        self.began = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 and done < total:
            return
        self.last = now
        filled = int(self.width * done / total) if total else self.width
        rate = done / (now - self.began) if now > self.began else 0.0
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {done:,}/{total:,} events  {rate:,.0f}/s")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
