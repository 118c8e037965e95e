"""Backend options declared as data: name, type, default, what is allowed, unit, help.

A backend lists its ``Option``s as class data; ``options_resolve`` is the one validation path
for every source of values (strings from ``--option NAME=VALUE``, JSON values from the admin,
Python values from the benchmarks). It runs in the backend's constructor, which does no I/O,
so a bad option is rejected before anything is stored or any worker forked. The admin form,
``listbackends`` and the generated docs/reference/options.md all read the same declarations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from queues.errors import InvalidSpec
from queues.text import suggest

OptionValue = int | float | bool | str
TYPES: tuple[type, ...] = (int, float, bool, str)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Option:
    """One backend option. ``choices`` or a ``minimum``/``maximum`` range (inclusive) limit
    its value; ``unit`` names what a number counts (``s``, ``us``, ``messages``)."""

    name: str
    type: type
    default: OptionValue
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    unit: str = ""

    def __post_init__(self) -> None:
        # a declaration error is a programming error: fail at import, not at a user's run
        if self.type not in TYPES:
            raise TypeError(f"option {self.name}: type must be one of int, float, bool, str")
        if self.choices and self.type is not str:
            raise TypeError(f"option {self.name}: only str options have choices")
        self.parse(self.default)

    def with_default(self, default: OptionValue) -> Option:
        """The same option with another default (a subclass that changes one)."""
        return replace(self, default=default)

    def allowed(self) -> str:
        """What the option accepts, in words: ``a number from 0.001 to 60 s``."""
        if self.type is bool:
            return "true or false"
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.type is str:
            return "a string"
        noun = "a whole number" if self.type is int else "a number"
        low, high = _plain(self.minimum), _plain(self.maximum)
        if self.minimum is not None and self.maximum is not None:
            bound = f" from {low} to {high}"
        elif self.minimum is not None:
            bound = f" of at least {low}"
        elif self.maximum is not None:
            bound = f" of at most {high}"
        else:
            bound = ""
        return f"{noun}{bound}{' ' + self.unit if self.unit else ''}"

    def parse(self, value: Any) -> OptionValue:
        """``value`` (a string, or a JSON or Python value) as this option's type, checked.
        Raises ``InvalidSpec`` saying what is allowed."""
        try:
            parsed = _convert(self.type, value)
        except (TypeError, ValueError):
            parsed = None
        if parsed is None or not self._within(parsed):
            raise InvalidSpec(f"option {self.name} must be {self.allowed()}, got {value!r}", field="options")
        return parsed

    def _within(self, value: OptionValue) -> bool:
        if self.choices:
            return value in self.choices
        if self.type in (int, float):
            assert isinstance(value, (int, float))
            if self.minimum is not None and value < self.minimum:
                return False
            if self.maximum is not None and value > self.maximum:
                return False
        return True

    def describe(self) -> dict[str, Any]:
        """JSON-ready: what ``listbackends --json`` and the admin show."""
        row = asdict(self)
        row["type"] = self.type.__name__
        row["choices"] = list(self.choices)
        row["allowed"] = self.allowed()
        return row


def options_from_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """``--option NAME=VALUE`` arguments as a mapping (the values parsed by ``options_resolve``)."""
    options = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InvalidSpec(f"--option takes NAME=VALUE, got {pair!r}")
        options[name.strip().replace("-", "_")] = value.strip()
    return options


def options_resolve(declared: Iterable[Option], given: Mapping[str, Any], *, owner: str) -> dict[str, OptionValue]:
    """Every declared option's value: ``given`` parsed and checked, the defaults filled in.

    Raises ``InvalidSpec`` for a name ``owner`` (a backend alias) does not declare, with a
    "did you mean" hint and the known names, or for a value that is not allowed.
    """
    by_name = {option.name: option for option in declared}
    for name in given:
        if name not in by_name:
            known = f"its options: {', '.join(sorted(by_name))}" if by_name else "it takes no options"
            raise InvalidSpec(f"{owner} has no option {name!r}{suggest(name, list(by_name))}; {known}", field="options")
    resolved = {}
    for name, option in by_name.items():
        if name not in given:
            resolved[name] = option.default
            continue
        try:
            resolved[name] = option.parse(given[name])
        except InvalidSpec as exc:
            raise InvalidSpec(f"{owner}: {exc}", field="options") from None
    return resolved


def _convert(kind: type, value: Any) -> OptionValue | None:
    """``value`` as ``kind``, or ``None`` when it is not one (``True`` is no number, 2.5 no int)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, (str, int)) else None
        return True if text in _TRUE else False if text in _FALSE else None
    if isinstance(value, bool):
        return None
    if kind is str:
        return value.strip() if isinstance(value, str) else None
    if isinstance(value, str):
        value = value.strip().replace("_", "")
        value = float(value) if kind is float or any(c in value for c in ".eE") else int(value)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if kind is int:
        return int(value) if float(value).is_integer() else None
    return float(value)


def _plain(number: float | None) -> str:
    """``300`` rather than ``300.0``; ``0.05`` as it is."""
    if number is None:
        return ""
    return str(int(number)) if float(number).is_integer() else str(number)
