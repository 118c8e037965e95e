"""Sweep one knob of a stored experiment over a list of values, as the admin's Sweep does."""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError

from experiments.management.base import BaseCommand, CommandError
from experiments.management.commands.launchrun import experiment_named, report_runs, validation_message
from experiments.services.launches import series_launch_sweep, sweep_values_parse


class Command(BaseCommand):
    help = (
        "Launch one run of EXPERIMENT per value of a knob (producers, consumers, batch, events_per_message, "
        "rate_eps, or option:NAME for a backend option), executed one after another by the cluster and "
        "stored as one series, e.g. `sweep my-exp --knob consumers --values 1,2,4,8 --wait`."
    )

    def add_arguments(self, parser):
        parser.add_argument("experiment", help="the experiment's name or id")
        parser.add_argument("--knob", required=True)
        parser.add_argument("--values", required=True, help="comma-separated, e.g. 1,2,4,8")
        parser.add_argument("--wait", action="store_true", help="wait for the runs and print their reports")
        parser.add_argument("--json", action="store_true", help="print JSON (with --wait: the series' result)")

    def handle(self, *args, **opts):
        experiment = experiment_named(opts["experiment"])
        values = sweep_values_parse(text=opts["values"])
        try:
            series = series_launch_sweep(experiment=experiment, knob=opts["knob"], values=values)
        except ValidationError as exc:
            raise CommandError(f"cannot sweep {experiment.name!r}: {validation_message(exc)}") from None
        ids = list(series.runs.order_by("pk").values_list("pk", flat=True))
        if not opts["json"]:
            self.stdout.write(
                f"launched sweep series {series.pk} of {experiment.name!r}: {opts['knob']} = "
                f"{', '.join(map(str, values))} as runs {', '.join(map(str, ids))}"
            )
        if opts["wait"]:
            try:
                report_runs(self, ids, as_json=False)
            finally:
                series.refresh_from_db()
                self.stdout.write(json.dumps(series.result, sort_keys=True) if opts["json"] else format_points(series))
        elif opts["json"]:
            self.stdout.write(json.dumps({"series_id": series.pk, "run_ids": ids}))


def format_points(series) -> str:
    lines = [f"series {series.pk} ({series.status}): {series.knob}"]
    for p in series.result.get("points", []):
        eps = f"{p['throughput_eps']:,.0f} events/s" if p["throughput_eps"] is not None else "-"
        p99 = f"p99 {p['p99_ms']:,.3f} ms" if p["p99_ms"] is not None else ""
        lines.append(
            f"  {p['value']!s:>12}  run {p['run_id']}  {p['status']:<9} {eps:>18}  {p99}  {p['verdict'] or ''}"
        )
    return "\n".join(lines)
