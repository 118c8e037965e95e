"""``python manage.py docsreference [--check]``: write the reference pages generated from the code
(``docs/reference/``), or with ``--check`` fail, naming them, when a checked-in page differs."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from experiments.management.base import BaseCommand, CommandError
from experiments.management.reference import PAGES, REGENERATE, pages_stale, pages_write


class Command(BaseCommand):
    help = (
        "Write the reference pages generated from the code: "
        + ", ".join(PAGES)
        + "; --check writes nothing and fails when one differs from what the code generates."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--check", action="store_true", help="write nothing; fail, naming them, when pages differ from the code"
        )
        parser.add_argument(
            "--root", metavar="DIR", help="the project folder the pages' paths start from (default: this project's)"
        )

    def handle(self, *args, **opts):
        root = Path(opts["root"]) if opts["root"] else Path(settings.BASE_DIR)
        if not root.is_dir():
            raise CommandError(f"--root {root}: no such folder; give the project's folder")
        if opts["check"]:
            stale = pages_stale(root=root)
            if stale:
                raise CommandError(f"{', '.join(stale)} differ(s) from the code; regenerate with `{REGENERATE}`")
            self.stdout.write(f"{len(PAGES)} reference pages match the code")
            return
        changed = pages_write(root=root)
        self.stdout.write(f"wrote {', '.join(changed)}" if changed else f"{len(PAGES)} reference pages already match")
