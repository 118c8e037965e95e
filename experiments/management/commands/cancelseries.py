"""Stop a running series, as the admin's Cancel series does."""

from __future__ import annotations

from experiments.management.base import BaseCommand, CommandError
from experiments.models import RunSeries
from experiments.services.series import series_cancel


class Command(BaseCommand):
    help = (
        "Stop series ID (a repeat, a sweep or a saturation search): none of its queued runs starts, and its "
        "running run stops within 2 s. A series that already ended is left unchanged (exit 1)."
    )

    def add_arguments(self, parser):
        parser.add_argument("series_id", type=int, metavar="ID", help="the series' id")

    def handle(self, *args, **opts):
        series = RunSeries.objects.filter(pk=opts["series_id"]).first()
        if series is None:
            raise CommandError(f"there is no series {opts['series_id']}")
        if not series_cancel(series=series):
            raise CommandError(
                f"series {series.pk} is {series.status}: only a running series can be cancelled; nothing changed"
            )
        self.stdout.write(f"series {series.pk} cancelled: its queued runs will not start")
