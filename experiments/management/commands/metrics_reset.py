"""Empty the Prometheus multiprocess folder before the web server and the cluster start."""

from __future__ import annotations

from django.conf import settings

from experiments.management.base import BaseCommand
from experiments.prometheus.metrics import metrics_reset


class Command(BaseCommand):
    help = (
        "Remove the imqueue metrics files (IMQ_METRICS_DIR) of every process that is gone. Run it before "
        "starting the web server and the cluster; the files of running processes are left alone."
    )

    def handle(self, *args, **opts):
        removed = metrics_reset()
        self.stdout.write(f"{removed} metrics files removed from {settings.IMQ_METRICS_DIR}")
