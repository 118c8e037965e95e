"""Launch runs of a stored experiment on the django-q2 cluster, as the admin's Launch does."""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError

from experiments.management.base import BaseCommand, CommandError
from experiments.management.waiting import runs_wait
from experiments.models import Experiment, Run
from experiments.reports.text import format_report
from experiments.selectors import run_json_summary
from experiments.services.launches import experiment_launch


def experiment_named(name_or_id: str) -> Experiment:
    """The experiment called ``name_or_id`` (or with that id), or a ``CommandError`` saying how
    to create one."""
    experiment = Experiment.objects.filter(name=name_or_id).first()
    if experiment is None and name_or_id.isdigit():
        experiment = Experiment.objects.filter(pk=int(name_or_id)).first()
    if experiment is None:
        raise CommandError(
            f"there is no experiment {name_or_id!r}: define it in the admin (Experiments > Add) or run it once "
            f"with `manage.py runexperiment --experiment {name_or_id!r} ...`"
        )
    return experiment


def validation_message(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
    return " ".join(exc.messages)


class Command(BaseCommand):
    help = (
        "Launch EXPERIMENT (a name or id) on the django-q2 cluster: the runs are stored as queued and a "
        "`manage.py qcluster` executes them one at a time. --repeat K launches K runs as one series "
        "(median and spread). --wait waits for them and prints their reports."
    )

    def add_arguments(self, parser):
        parser.add_argument("experiment", help="the experiment's name or id")
        parser.add_argument("--repeat", type=int, default=1, help="runs to launch as one series (default 1)")
        parser.add_argument("--wait", action="store_true", help="wait for the runs to end and print their reports")
        parser.add_argument("--json", action="store_true", help="print the launched run ids (and reports) as JSON")

    def handle(self, *args, **opts):
        experiment = experiment_named(opts["experiment"])
        try:
            runs = experiment_launch(experiment=experiment, repeat=opts["repeat"])
        except ValidationError as exc:
            raise CommandError(f"cannot launch {experiment.name!r}: {validation_message(exc)}") from None
        ids = [run.pk for run in runs]
        series = f" as series {runs[0].series_id}" if runs[0].series_id else ""
        if not opts["json"]:
            self.stdout.write(f"launched {len(ids)} run(s) of {experiment.name!r}{series}: {', '.join(map(str, ids))}")
        if opts["wait"]:
            report_runs(self, ids, as_json=opts["json"])
        elif opts["json"]:
            self.stdout.write(json.dumps({"run_ids": ids, "series_id": runs[0].series_id}))


def report_runs(command: BaseCommand, ids: list[int], *, as_json: bool) -> None:
    """Wait for runs ``ids`` and print each report as it ends; exit 1 if any did not succeed."""

    def show(run):
        if not as_json:
            command.stdout.write(format_report(run))

    try:
        runs = runs_wait(run_ids=ids, on_end=show, on_note=command.stderr.write)
    except KeyboardInterrupt:
        raise CommandError(
            "stopped waiting; the runs go on in the cluster (`manage.py cancelrun ID` stops one)"
        ) from None
    if as_json:
        command.stdout.write(json.dumps([run_json_summary(run=run) for run in runs], sort_keys=True))
    failed = [run for run in runs if run.status != Run.Status.SUCCEEDED]
    if failed:
        raise CommandError(f"run {failed[0].pk} {failed[0].status}: {failed[0].error}")
