"""The base of every command of this app: a mistake on the command line is one line and exit 1.

Django's parser prints the whole usage text and exits 2 for an unknown flag or a missing value,
where every other bad input of our commands is one line (``CommandError``) and exit 1. Commands
import ``BaseCommand`` and ``CommandError`` from here; ``CommandError`` is Django's own.
"""

from __future__ import annotations

from typing import NoReturn

from django.core.management.base import BaseCommand as DjangoBaseCommand
from django.core.management.base import CommandError, CommandParser

__all__ = ["BaseCommand", "CommandError", "OneLineErrorParser"]


class OneLineErrorParser(CommandParser):
    """``listbackends: error: unrecognized arguments: --frobnicate (see manage.py listbackends --help)``
    on stderr and exit status 1, instead of the usage text and 2. Called from code
    (``call_command``), it raises ``CommandError`` as Django's does."""

    def error(self, message: str) -> NoReturn:
        if not self.called_from_command_line:
            super().error(message)  # raises CommandError
        command = self.prog.rpartition(" ")[2]
        self.exit(1, f"{command}: error: {message} (see {self.prog} --help)\n")


class BaseCommand(DjangoBaseCommand):
    """Django's command with the one-line parser."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # Django builds its CommandParser itself and offers no hook for the class; the parser
        # keeps every argument and setting, only its error() changes (sub-parsers follow type(self))
        parser.__class__ = OneLineErrorParser
        return parser
