"""``python manage.py hosts [--all] [--json]``: the load hosts that answer (fresh heartbeat)."""

from __future__ import annotations

import json

from django.utils import timezone

from experiments.hosts.heartbeat import hosts_alive
from experiments.management.base import BaseCommand
from experiments.models import Host


class Command(BaseCommand):
    help = (
        "List the load hosts that answer: qclusters started with IMQ_HOST_NAME whose heartbeat is fresh "
        "(IMQ_HOST_ALIVE_S), with their CPUs, workers, busy shares, last heartbeat and clock offset."
    )

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="also the hosts that stopped answering")
        parser.add_argument("--json", action="store_true", help="print a JSON list")

    def handle(self, *args, **opts):
        alive = {h.pk for h in hosts_alive()}
        hosts = list(Host.objects.all()) if opts["all"] else [h for h in Host.objects.all() if h.pk in alive]
        now = timezone.now()
        rows = [_row(h, now, h.pk in alive) for h in hosts]
        if opts["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        if not rows:
            self.stdout.write("no load host answers (start one: IMQ_HOST_NAME=a python manage.py qcluster)")
            return
        self.stdout.write(f"{'host':<12} {'state':<8} {'queue':<20} {'cpus':>4} {'busy':>9} {'seen':>7}  clock offset")
        for r in rows:
            clock = (
                "not measured"
                if r["clock_offset_ms"] is None
                else f"{r['clock_offset_ms']:+.3f} ms ± {r['clock_uncertainty_ms']:.3f} ms"
            )
            self.stdout.write(
                f"{r['name']:<12} {r['state']:<8} {r['queue']:<20} {r['cpus']:>4} "
                f"{r['busy']:>4}/{r['workers']:<4} {r['seen_s_ago']:>6.1f}s  {clock}"
            )


def _row(host: Host, now, alive: bool) -> dict:
    ms = lambda s: None if s is None else round(s * 1000, 3)  # noqa: E731
    return {
        "name": host.name,
        "state": "answers" if alive else "silent",
        "queue": host.queue,
        "machine": host.machine,
        "pid": host.pid,
        "cpus": host.cpus,
        "workers": host.workers,
        "busy": host.busy,
        "seen_s_ago": round((now - host.last_seen).total_seconds(), 1),
        "clock_offset_ms": ms(host.clock_offset_s),
        "clock_uncertainty_ms": ms(host.clock_uncertainty_s),
        "clock_reference": host.clock_reference,
    }
