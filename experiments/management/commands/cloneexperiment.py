"""Copy an experiment's definition, as the admin's Clone does."""

from __future__ import annotations

from experiments.management.base import BaseCommand
from experiments.management.commands.launchrun import experiment_named
from experiments.services.launches import experiment_clone


class Command(BaseCommand):
    help = "Copy EXPERIMENT's definition (a name or id) as 'NAME (copy)', 'NAME (copy 2)'..., without its runs."

    def add_arguments(self, parser):
        parser.add_argument("experiment", help="the experiment's name or id")

    def handle(self, *args, **opts):
        copy = experiment_clone(experiment=experiment_named(opts["experiment"]))
        self.stdout.write(f"experiment {copy.pk}: {copy.name!r}")
