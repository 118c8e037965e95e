"""``python manage.py listbackends``: every backend and approach, its guarantees, and whether
its server answers now."""

from __future__ import annotations

import json

from django.conf import settings

from experiments.management.base import BaseCommand
from experiments.services.backend_status import backend_statuses


class Command(BaseCommand):
    help = (
        "List every backend with its delivery guarantee, capabilities and options, and whether its server "
        "answers now (all probed at once, each within its connect_timeout_s)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print a JSON list")

    def handle(self, *args, **opts):
        statuses = backend_statuses(urls=settings.IMQ_URLS)
        if opts["json"]:
            self.stdout.write(json.dumps(statuses, indent=2))
            return
        for status in statuses:
            caps = status["capabilities"]
            flags = ", ".join(k for k, v in caps.items() if v)
            guarantees = f"{status['guarantee']}: {flags}" if status["guarantee"] else status["description"]
            self.stdout.write(f"{status['alias']:<18} {status['state']:<12} {status['url']}")
            self.stdout.write(f"{'':<18} {guarantees}")
            if status["detail"]:
                self.stdout.write(f"{'':<18} {status['detail']}")
            for option in status["options"]:
                self.stdout.write(f"{'':<18} --option {_option_line(option)}")


def _option_line(option: dict) -> str:
    """``prefetch=1000  int: a whole number from 1 to 65535 messages; basic_qos prefetch count``"""
    default = option["default"]
    shown = (
        str(default).lower() if isinstance(default, bool) else f"{default:g}" if isinstance(default, float) else default
    )
    return f"{option['name']}={shown}  {option['type']}: {option['allowed']}; {option['help']}"
