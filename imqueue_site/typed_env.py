"""Typed reads of the environment for ``settings.py``, and the one-line error a bad value gives.

Each read names its variable and what it accepts, so that a value the setting cannot take stops
the site with one line that says what to write instead, e.g.
``IMQ_RUN_TIMEOUT_S=1h: expected a whole number of seconds, at least 1 (e.g. 3600)`` or
``DJANGO_DEBUG=ture: expected true or false (1/0, yes/no, on/off)``, never with a traceback nor a
wrong value read silently. ``exit_on_bad_settings()`` is what the entry points (``manage.py``,
``asgi.py``) call to print that line alone.

Our own rather than a library's (environs, django-environ): parsing each type is a line, and what
matters here is the message, which those libraries word as a validation error without an example.
An empty value counts as unset for a typed read: ``VAR=`` in a shell or a compose file means the
default, not an error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import dj_database_url
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

TRUE, FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})
DATABASE_EXAMPLE = "postgres://user:password@127.0.0.1:5432/imqueue"


class SettingError(ImproperlyConfigured):
    """An environment variable holds a value its setting cannot take. The message is one line:
    ``NAME=value: expected <what it accepts> (e.g. <an example>)``, a password in it masked."""

    def __init__(self, name: str, value: str, expected: str) -> None:
        super().__init__(f"{name}={shown(value)}: expected {expected}")


def shown(value: str) -> str:
    """``value`` as the error line shows it: on one line, a URL's password masked."""
    masked = re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", value)
    return masked if masked.isprintable() else repr(masked)


def bounds(minimum: float | None, maximum: float | None, *, exclusive: bool = False) -> str:
    """The words for a range: ``, at least 1``, ``, above 0``, ``, from 1 to 65535``."""
    if minimum is not None and maximum is not None:
        return f", from {minimum} to {maximum}"
    if minimum is not None:
        return f", above {minimum}" if exclusive else f", at least {minimum}"
    return f", at most {maximum}" if maximum is not None else ""


class Env:
    """Typed reads of ``environ`` with the defaults written in ``settings.py``."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def given(self, name: str) -> str | None:
        """The variable's value, stripped; ``None`` when it is unset or empty."""
        value = self.environ.get(name, "").strip()
        return value or None

    def str(self, name: str, default: str = "") -> str:
        return self.environ.get(name, default)

    def int(
        self, name: str, default: int, *, unit: str = "", minimum: int | None = None, maximum: int | None = None
    ) -> int:
        """A whole number, ``unit`` naming what it counts (``seconds``) in the message."""
        value = self.given(name)
        if value is None:
            return default
        expected = f"a whole number{f' of {unit}' if unit else ''}{bounds(minimum, maximum)} (e.g. {default})"
        try:
            number = int(value)
        except ValueError:
            raise SettingError(name, value, expected) from None
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise SettingError(name, value, expected)
        return number

    def float(self, name: str, default: float, *, unit: str = "", positive: bool = False) -> float:
        """A finite number (``2``, ``0.5``); ``positive``: above 0."""
        value = self.given(name)
        if value is None:
            return default
        expected = f"a number{f' of {unit}' if unit else ''}{bounds(0 if positive else None, None, exclusive=True)}"
        expected += f" (e.g. {default:g})"
        try:
            number = float(value)
        except ValueError:
            raise SettingError(name, value, expected) from None
        if not math.isfinite(number) or (positive and number <= 0):
            raise SettingError(name, value, expected)
        return number

    def bool(self, name: str, default: bool) -> bool:
        """true or false, in any case, or their other spellings; anything else is an error, never
        a silent false."""
        value = self.given(name)
        if value is None:
            return default
        if value.lower() in TRUE | FALSE:
            return value.lower() in TRUE
        raise SettingError(name, value, "true or false (1/0, yes/no, on/off)")

    def choice(self, name: str, default: str, choices: Iterable[str]) -> str:
        """One of ``choices``, in any case; returned as ``choices`` spells it."""
        value = self.given(name)
        if value is None:
            return default
        spelled = {choice.lower(): choice for choice in choices}
        if value.lower() not in spelled:
            raise SettingError(name, value, f"one of {', '.join(spelled.values())}")
        return spelled[value.lower()]

    def list(self, name: str, default: list[str]) -> list[str]:
        """Comma-separated; set and empty, the empty list."""
        value = self.environ.get(name)
        return default if value is None else [item.strip() for item in value.split(",") if item.strip()]

    def url(self, name: str, default: str, *, schemes: Iterable[str], example: str) -> str:
        """A URL of one of ``schemes`` with a host or a path; unset or empty, ``default``."""
        value = self.given(name)
        if value is None:
            return default
        schemes = tuple(schemes)
        expected = f"a URL starting {' or '.join(s + '://' for s in schemes)} (e.g. {example})"
        try:
            parts = urlsplit(value)
        except ValueError:
            raise SettingError(name, value, expected) from None
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            raise SettingError(name, value, expected)
        return value

    def database(self, name: str, default: str) -> dict[str, Any]:
        """A database URL, parsed by dj-database-url into Django's ``DATABASES`` entry."""
        value = self.given(name) or default
        expected = f"a database URL such as {DATABASE_EXAMPLE}, mysql://... or sqlite:////absolute/path.sqlite3"
        try:
            return dict(dj_database_url.parse(value, conn_max_age=0))
        except ValueError:  # its UnknownSchemeError and ParseError: a scheme it has no engine for, a bad port
            raise SettingError(name, value, expected) from None

    def prefixed(self, prefix: str, suffix: str) -> dict[str, str]:
        return {k: v for k, v in self.environ.items() if k.startswith(prefix) and k.endswith(suffix)}


def exit_on_bad_settings() -> None:
    """Load Django's settings now; if one cannot be read, end the process with its message on one
    line of stderr (exit status 1) instead of a traceback. For the entry points a person starts
    (``manage.py``, the web server's ``asgi.py``); anything else raised later keeps its traceback."""
    try:
        _ = settings.INSTALLED_APPS  # the first access imports the settings module
    except ImproperlyConfigured as exc:
        raise SystemExit(f"ImproperlyConfigured: {exc}") from None
