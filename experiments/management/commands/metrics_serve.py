"""Serve this machine's (or container's) Prometheus figures on a port of their own."""

from __future__ import annotations

import threading

from django.conf import settings
from prometheus_client import start_http_server

from experiments.management.base import BaseCommand
from experiments.prometheus.metrics import registry_create


class Command(BaseCommand):
    help = (
        "Serve /metrics from IMQ_METRICS_DIR on IMQ_CLUSTER_METRICS_PORT (9108): for a cluster running in a "
        "container without the web server, whose runs' figures Prometheus scrapes here. Runs until stopped."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--port",
            type=int,
            default=settings.IMQ_CLUSTER_METRICS_PORT,
            help="port to listen on (default: IMQ_CLUSTER_METRICS_PORT, 9108)",
        )
        parser.add_argument("--addr", default="0.0.0.0", help="address to listen on (default: every interface)")

    def handle(self, *args, **opts):
        server, thread = start_http_server(opts["port"], opts["addr"], registry=registry_create())
        self.stdout.write(f"serving {settings.IMQ_METRICS_DIR} on http://{opts['addr']}:{opts['port']}/metrics")
        try:
            threading.Event().wait()  # the server runs in its thread until Ctrl-C or SIGTERM
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
