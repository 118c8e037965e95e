"""``python manage.py cleanup``: what killed runners left behind (see ``experiments.services.cleanup``)."""

from __future__ import annotations

from django.conf import settings

from experiments.management.base import BaseCommand, CommandError
from experiments.services.cleanup import leftovers_remove
from queues.errors import QueueError
from queues.faults.servers import stale_private_servers, stale_private_servers_cleanup
from queues.run.launch import NAMESPACE, check_alias


class Command(BaseCommand):
    help = (
        "Mark failed the runs whose runner process is gone, remove the server-side queues, tables and "
        "keys of runs that have ended, and the private servers (restart-server) whose run is gone. Prints what "
        "it removed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="print what would be done, change nothing")
        parser.add_argument(
            "--backend",
            action="append",
            default=[],
            metavar="ALIAS",
            help="only this backend (repeatable; default: every backend)",
        )
        parser.add_argument(
            "--namespace", default=NAMESPACE, help="queue name prefix of the runs (default %(default)s)"
        )

    def handle(self, *args, **opts):
        try:
            for alias in opts["backend"]:
                if check_alias(alias) != "backend":
                    raise QueueError(f"{alias} is an in-process approach: it leaves nothing on a server")
        except QueueError as exc:
            raise CommandError(str(exc)) from None
        report = leftovers_remove(
            backends=opts["backend"] or None,
            urls=settings.IMQ_URLS,
            namespace=opts["namespace"],
            dry_run=opts["dry_run"],
        )
        lines = report.lines(dry_run=opts["dry_run"])
        for line in lines:
            self.stdout.write(line)
        servers = stale_private_servers() if opts["dry_run"] else stale_private_servers_cleanup()
        for directory in servers:
            self.stdout.write(
                f"{'would remove' if opts['dry_run'] else 'removed'} the private server {directory} (its run is gone)"
            )
        if not report.stale and not report.removed and not servers:
            self.stdout.write("nothing to clean up")
