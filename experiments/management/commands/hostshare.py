"""Run one host's share of a distributed run in the foreground: what a load host's cluster
worker does with the task the run's coordinator routed to it."""

from __future__ import annotations

from experiments.hosts.distribution import share_execute
from experiments.hosts.heartbeat import clock_skew_install
from experiments.management.base import BaseCommand, CommandError
from experiments.models import HostShare


class Command(BaseCommand):
    help = (
        "Run share ID of a distributed run on this load host: start its workers, join the start barrier, "
        "report every interval until the coordinator stops the run."
    )

    def add_arguments(self, parser):
        parser.add_argument("share_id", type=int, metavar="ID", help="the share's id")

    def handle(self, *args, **opts):
        if not HostShare.objects.filter(pk=opts["share_id"]).exists():
            raise CommandError(f"there is no share {opts['share_id']}")
        clock_skew_install()  # tests only (IMQ_CLOCK_SKEW_S): before the offset is measured and the workers forked
        self.stdout.write(share_execute(share_id=opts["share_id"]))
