"""The reference pages generated from the code: ``docs/reference/*.md``.

Each page is a function of declarations the code already holds, never copied by hand: the
backends' options (``queues.backends.options``), the management commands' argparse parsers, the
environment variables the settings read (``imqueue_site/environment.py``, seen here as the
setting ``ENVIRONMENT_VARIABLES``: the app does not import the site) and the ``imqueue_*``
Prometheus metrics. ``manage.py docsreference`` writes them; ``--check`` (and a test) fails when
a checked-in page differs from what the code generates now.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.management import BaseCommand, find_commands, load_command_class
from prometheus_client.metrics import MetricWrapperBase

from experiments.prometheus import metrics
from queues.backends import BACKENDS, backend_class
from queues.backends.options import Option
from queues.run.approaches import APPROACHES

REGENERATE = "python manage.py docsreference"
NOTE = f"> Generated from the code by `{REGENERATE}`: do not edit by hand, run it again after a change."
#: The app whose commands are documented (Django's own and other apps' are not ours).
APP = "experiments"
PROG = "python manage.py"


# -- Markdown ----------------------------------------------------------------------------------

_CODE_SPAN = re.compile(r"(`[^`]*`)")


def cell(text: object) -> str:
    """``text`` as one Markdown table cell, on one line. Outside code spans ``|`` is escaped, and
    ``<``, ``>`` and ``*`` too, so that a ``<name>`` is not taken for HTML nor ``DJANGO_SECURE_*``
    for emphasis. A code span holding a ``|`` is written as HTML: mkdocs would show a ``\\|``
    inside a code span as it is, and GitHub would end the cell at a bare one."""
    parts = _CODE_SPAN.split(" ".join(str(text).split()))
    return "".join(_code_cell(part) if part.startswith("`") else _escaped(part).replace("|", r"\|") for part in parts)


def _escaped(text: str) -> str:
    """Text outside code spans, with what Markdown would read as HTML or emphasis escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("*", r"\*")


def _code_cell(span: str) -> str:
    """A code span as it stays, or as HTML when it holds a ``|``."""
    if "|" not in span:
        return span
    return "<code>" + span[1:-1].replace("&", "&amp;").replace("<", "&lt;").replace("|", "&#124;") + "</code>"


def code(text: object) -> str:
    """``text`` as a code span (a backtick inside it is impossible in our names)."""
    return f"`{text}`"


def table(header: tuple[str, ...], rows: list[tuple[object, ...]]) -> list[str]:
    """A Markdown table, each value made a cell."""
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
        *("| " + " | ".join(cell(value) for value in row) + " |" for row in rows),
    ]


def page(title: str, *body: str) -> str:
    """A page: the generated note first, then the title and the body's lines."""
    return "\n".join([NOTE, "", f"# {title}", "", *body]).rstrip("\n") + "\n"


# -- the pages ---------------------------------------------------------------------------------


def options_page() -> str:
    """Every backend's options, from the declarations. An option declared alike (same name, type,
    default, range and help) by several backends is one row naming them all."""
    rows: dict[Option, list[str]] = {}
    without = []
    for alias in BACKENDS:
        declared = backend_class(alias).options
        if not declared:
            without.append(alias)
        for option in declared:
            rows.setdefault(option, []).append(alias)
    return page(
        "Backend options",
        "Set with `--option NAME=VALUE` (`runexperiment`, `launchrun`'s experiment) or in the admin's experiment "
        "form; `python manage.py listbackends` shows the same. A name a backend does not declare, or a value "
        "outside what is allowed, is rejected before anything is stored, and every run records all of its "
        "backend's options, defaults included.",
        "",
        *table(
            ("backend", "option", "default", "allowed", "meaning"),
            [
                (
                    ", ".join(code(alias) for alias in aliases),
                    code(o.name),
                    code(_value(o.default)),
                    o.allowed(),
                    o.help,
                )
                for o, aliases in rows.items()
            ],
        ),
        "",
        "Without options: "
        + ", ".join(code(alias) for alias in without)
        + (", " if without else "")
        + "and the in-process approaches ("
        + ", ".join(code(name) for name in sorted(APPROACHES))
        + ").",
    )


def _value(value: object) -> str:
    """A default as it is written on the command line: ``true``, ``0.05``, ``300``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def commands_page() -> str:
    """Every management command of the app, with its help and its arguments (Django's common
    ones, ``--verbosity`` and the like, left out: every command takes them)."""
    common = {action.dest for action in BaseCommand().create_parser(PROG, "command")._actions}
    directory = Path(__file__).resolve().parent
    body = [
        "Run each as `python manage.py NAME [ARGUMENTS]`; `python manage.py help NAME` prints the same. Every "
        "command also takes Django's common options (`--verbosity`, `--settings`, `--traceback`, ...).",
    ]
    for name in sorted(find_commands(str(directory))):
        command = load_command_class(APP, name)
        parser = command.create_parser(PROG, name)
        # argparse lists a parser's arguments only in ``_actions`` (what its own help reads)
        ours = [action for action in parser._actions if action.dest not in common]
        body += ["", f"## `{name}`", "", cell(command.help)]
        if ours:
            body += ["", *table(("argument", "help"), [(code(_invocation(a)), _help(a, name)) for a in ours])]
    return page("Management commands", *body)


def _invocation(action: argparse.Action) -> str:
    """How an argument is written: ``--faults FAULTS``, ``ID [ID ...]``, ``--json``."""
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    if action.metavar is not None:
        metavar = str(action.metavar)
    elif action.choices is not None:
        metavar = "{" + ",".join(str(choice) for choice in action.choices) + "}"
    else:
        metavar = action.dest.upper() if action.option_strings else action.dest
    shapes: dict[object, str] = {
        None: metavar,
        "?": f"[{metavar}]",
        "*": f"[{metavar} ...]",
        "+": f"{metavar} [{metavar} ...]",
    }
    value = shapes.get(action.nargs, " ".join([metavar] * action.nargs) if isinstance(action.nargs, int) else "...")
    return f"{', '.join(action.option_strings)} {value}" if action.option_strings else value


def _help(action: argparse.Action, name: str) -> str:
    """The argument's help with argparse's ``%(default)s``-style fields filled in, as
    ``--help`` shows it (done here rather than by argparse's private formatter)."""
    text = action.help or ""
    if text == argparse.SUPPRESS:
        return ""
    fields = {
        key: getattr(value, "__name__", value) for key, value in vars(action).items() if value is not argparse.SUPPRESS
    }
    if action.choices is not None:
        fields["choices"] = ", ".join(str(choice) for choice in action.choices)
    text = text % {**fields, "prog": f"{PROG} {name}"}
    if action.required and action.option_strings:
        text = f"required; {text}" if text else "required"
    return text


def settings_page() -> str:
    """The environment variables the settings read, by what they are for, and the queue
    servers' URLs as the backend classes declare them."""
    groups: dict[str, list[tuple[object, ...]]] = {}
    for variable in settings.ENVIRONMENT_VARIABLES:
        default = variable.default_text or (code(variable.default) if variable.default else "unset")
        groups.setdefault(variable.group, []).append((code(variable.name), default, variable.help))
    body = [
        "`imqueue_site/settings.py` is the only module that reads the environment. With nothing set, the project "
        "runs on SQLite in the project folder, the in-memory backend and the local servers on their standard ports. "
        "Each value is read by one typed reader (`imqueue_site/typed_env.py`): a value it cannot read stops every "
        "command, the web server and the cluster with one line that names the variable and what it accepts, e.g. "
        "`IMQ_RUN_TIMEOUT_S=1h: expected a whole number of seconds, at least 1 (e.g. 3600)`. An empty value is "
        "the default."
    ]
    for group, rows in groups.items():
        body += ["", f"## {group[0].upper()}{group[1:]}", "", *table(("variable", "default", "what for"), rows)]
    servers: dict[str, tuple[str, list[str]]] = {}
    for alias in BACKENDS:
        cls = backend_class(alias)
        if cls.url_setting:
            servers.setdefault(cls.url_setting, (cls.default_url, []))[1].append(alias)
    body += [
        "",
        "## Queue servers",
        "",
        "Each backend reads its server's URL from one variable, `IMQ_<NAME>_URL`; unset, it uses the local server "
        "on its standard port. The shorter names (`REDIS_URL`, `AMQP_URL`, `MYSQL_URL`, `POSTGRES_URL`) are "
        "accepted too; the `IMQ_` ones win when both are set.",
        "",
        *table(
            ("variable", "default", "backends"),
            [
                (code(name), code(url), ", ".join(code(alias) for alias in aliases))
                for name, (url, aliases) in sorted(servers.items())
            ],
        ),
    ]
    return page("Settings: the environment", *body)


def metrics_page() -> str:
    """The ``imqueue_*`` metrics as ``experiments.prometheus.metrics`` defines them, with the
    series a scrape shows for each."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    rows = []
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        [family] = metric.describe()
        labels = metric._labelnames  # prometheus_client has no public reader of a metric's label names
        series = ", ".join(code(family.name + suffix) for suffix in suffixes.get(family.type, ("",)))
        rows.append((series, family.type, ", ".join(code(label) for label in labels), family.documentation))
    return page(
        "Prometheus metrics",
        "Served by the web server's `/metrics` and by `python manage.py metrics_serve`. The counters and the "
        "histogram add up every process's figures; the gauges describe the running run (only live processes "
        "count). Labels stay few and bounded: never a run id.",
        "",
        *table(("series", "type", "labels", "help"), rows),
        "",
        "The latency histogram's buckets (upper bounds, seconds): "
        + ", ".join(f"{bound:g}" for bound in metrics.LATENCY_BUCKETS_S)
        + ".",
    )


#: Each generated page, by its path in the project.
PAGES: dict[str, Callable[[], str]] = {
    "docs/reference/options.md": options_page,
    "docs/reference/commands.md": commands_page,
    "docs/reference/settings.md": settings_page,
    "docs/reference/metrics.md": metrics_page,
}


def pages_stale(*, root: Path) -> list[str]:
    """The pages under ``root`` that are missing or differ from what the code generates now."""
    return [
        path
        for path, generate in PAGES.items()
        if not (root / path).is_file() or (root / path).read_text() != generate()
    ]


def pages_write(*, root: Path) -> list[str]:
    """Write every page under ``root``; returns the paths that changed."""
    changed = pages_stale(root=root)
    for path in changed:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(PAGES[path]())
    return changed
