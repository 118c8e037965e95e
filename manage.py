#!/usr/bin/env python
"""Django's command-line utility for imqueue."""

import os
import sys

from django.core.management import execute_from_command_line

from imqueue_site.typed_env import exit_on_bad_settings


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imqueue_site.settings")
    # a variable the settings cannot take: its one line (what to write instead), not a traceback
    exit_on_bad_settings()
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
