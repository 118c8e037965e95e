"""Named SQL queries kept in resource files (``queues/backends/sql/<dialect>.sql``), loaded once.

A file is a series of blocks, each opened by a ``-- name: <query>`` line (procrastinate's
``sql/queries.sql``). Queries carry ``{queue}``-style placeholders for identifiers, which the
backend fills in with properly quoted names, and driver placeholders (``%s``) for values.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
from importlib import resources

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_UNSAFE = re.compile(r"[^a-z0-9_]+")
MAX_TABLE_CHARS = 48  # leaves room for suffixes under Postgres' 63-byte identifier limit
#: A table name ends with ``_`` and 8 hex digits of the queue name's hash (``table_name``).
DIGEST_SUFFIX_CHARS = 9
#: A queue's table, or an object named after it (``_dead`` table, ``_notify`` function).
_OBJECT = re.compile(r"^(?P<table>(?P<readable>.+)_[0-9a-f]{8})(?:_dead|_notify)?$")
#: What ``table_name`` turns into ``_`` in the run ids the runner makes (``r12-a1b2c3``).
_REPLACED = ("_", "-", ".")
MAX_GUESSED_SEPARATORS = 4


@functools.cache
def queries(dialect: str) -> dict[str, str]:
    """``{name: sql}`` for ``sql/<dialect>.sql``. Raises ``KeyError`` on a duplicate name."""
    text = resources.files(__package__).joinpath("sql", f"{dialect}.sql").read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise KeyError(f"query {name!r} defined twice in {dialect}.sql")
        # comments stay in the file for readers; the server gets the bare statement
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        found[name] = "\n".join(lines).strip().rstrip(";")
    return found


def table_name(queue: str) -> str:
    """A safe, lower-case SQL identifier for ``queue``, unique per queue name.

    Queue names (``<namespace>.<run id>``) may hold dots and dashes: those become ``_``, and a
    short hash of the exact name is appended so that ``a.b`` and ``a_b`` never share a table.
    The readable part keeps the namespace first, so a run's tables are found by prefix.
    """
    readable = _UNSAFE.sub("_", queue.lower()).strip("_") or "q"
    if readable[0].isdigit():
        readable = f"q_{readable}"  # an unquoted identifier cannot start with a digit
    digest = hashlib.sha1(queue.encode("utf-8")).hexdigest()[:8]
    return f"{readable[:MAX_TABLE_CHARS]}_{digest}"


def table_prefix(namespace: str) -> str:
    """The prefix every table of queues in ``namespace`` starts with (for cleanup checks)."""
    return table_name(f"{namespace}.x").rsplit("_", 2)[0] + "_"


def queue_of_object(name: str, namespace: str) -> str | None:
    """The queue (``<namespace>.<rest>``) whose table is, or is the base of, ``name``; ``None``
    if ``name`` is not such an object under ``namespace``.

    ``table_name`` is one way (unsafe characters become ``_``), but it ends with a hash of the
    exact queue name: each ``_`` of the rest is tried as ``_``, ``-`` and ``.`` (at most
    ``MAX_GUESSED_SEPARATORS`` of them) and a candidate counts only if it hashes to the same
    table. A queue name cut at ``MAX_TABLE_CHARS`` is never recovered (the runner's are short).
    """
    match = _OBJECT.match(name)
    prefix = table_prefix(namespace)
    if match is None or not match["readable"].startswith(prefix):
        return None
    parts = match["readable"][len(prefix) :].split("_")
    if len(parts) - 1 > MAX_GUESSED_SEPARATORS:
        return None
    for separators in itertools.product(_REPLACED, repeat=len(parts) - 1):
        rest = parts[0] + "".join(sep + part for sep, part in zip(separators, parts[1:], strict=True))
        queue = f"{namespace}.{rest}"
        if table_name(queue) == match["table"]:
            return queue
    return None
