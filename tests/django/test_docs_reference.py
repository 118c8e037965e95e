"""The reference pages generated from the code (docs/reference/): the checked-in copies match what
the code generates, ``docsreference --check`` names a page that differs, and what each page is
generated from covers what it documents."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command, find_commands
from django.core.management.base import CommandError

from experiments.management.reference import PAGES, cell, commands_page, metrics_page, options_page
from experiments.prometheus import metrics
from imqueue_site.environment import VARIABLES
from queues.backends import BACKENDS, backend_class

ROOT = Path(settings.BASE_DIR)
SETTINGS_PY = ROOT / "imqueue_site" / "settings.py"


def test_the_checked_in_pages_match_the_code(capsys):
    call_command("docsreference", "--check")  # raises, naming the pages and the command, when one differs
    assert capsys.readouterr().out.strip() == f"{len(PAGES)} reference pages match the code"


def test_check_names_a_page_edited_or_missing_in_a_copy_and_writing_it_again_fixes_it(tmp_path):
    for path in PAGES:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    options = tmp_path / "docs/reference/options.md"
    options.write_text(options.read_text().replace("| `copy` |", "| `unnest` |", 1))
    (tmp_path / "docs/reference/metrics.md").unlink()
    says = (
        "docs/reference/options.md, docs/reference/metrics.md differ(s) from the code; "
        "regenerate with `python manage.py docsreference`"
    )
    with pytest.raises(CommandError) as caught:
        call_command("docsreference", "--check", "--root", str(tmp_path))
    assert str(caught.value) == says
    call_command("docsreference", "--root", str(tmp_path))
    call_command("docsreference", "--check", "--root", str(tmp_path))
    assert options.read_text() == (ROOT / "docs/reference/options.md").read_text()


def test_a_root_that_is_no_folder_is_refused_in_one_line(tmp_path):
    with pytest.raises(CommandError, match="--root .*nowhere: no such folder; give the project's folder"):
        call_command("docsreference", "--check", "--root", str(tmp_path / "nowhere"))


def test_a_cell_escapes_pipes_and_html_and_writes_a_code_span_holding_a_pipe_as_html():
    assert cell("a | b <name> DJANGO_* `<x>`\nnext") == r"a \| b &lt;name&gt; DJANGO_\* `<x>` next"
    assert cell("`x|<y>`") == "<code>x&#124;&lt;y></code>"


def _rows(text: str, header: str) -> list[list[str]]:
    """The rows of the table under ``header``, as cells with their escapes undone."""
    lines = text.splitlines()
    start = lines.index(header) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = line.strip("|").replace(r"\|", "\0").split("|")  # an escaped pipe is no cell's end
        rows.append([c.strip().replace("\0", "|") for c in cells])
    return rows


def test_the_options_page_has_each_backends_options_once_with_its_default_and_range():
    listed = {}
    for backends, option, default, allowed, _help in _rows(
        options_page(), "| backend | option | default | allowed | meaning |"
    ):
        for alias in backends.split(", "):
            key = (alias.strip("`"), option.strip("`"))
            assert key not in listed, f"{key} listed twice"
            listed[key] = (default.strip("`"), allowed)
    declared = {
        (alias, option.name): (_written(option.default), option.allowed())
        for alias in BACKENDS
        for option in backend_class(alias).options
    }
    assert listed == declared


def _written(value: object) -> str:
    """A default as written on the command line: ``true``, ``0.05``, ``300``."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def test_the_commands_page_has_each_of_our_commands_and_none_of_djangos_options():
    text = commands_page()
    ours = find_commands(str(ROOT / "experiments" / "management"))
    assert [line[4:-1] for line in text.splitlines() if line.startswith("## ")] == sorted(ours)
    assert "## `migrate`" not in text and "| `--verbosity" not in text
    assert "| `--write-docs [PATH]` | write the table into this page" in text
    assert "| `--rate RATE` | offered events/s (default 1000) |" in text  # %(default)g filled in


def test_the_metrics_page_has_each_imqueue_metric_with_its_type_and_labels():
    text = metrics_page()
    defined = [m for m in vars(metrics).values() if hasattr(m, "_labelnames") and hasattr(m, "describe")]
    assert len(defined) == 9
    assert (
        "| `imqueue_runs_total` | counter | `backend`, `status` | Runs ended, by the status they ended with. |" in text
    )
    assert "| `imqueue_queue_depth` | gauge | `backend` |" in text
    assert "`imqueue_latency_seconds_bucket`, `imqueue_latency_seconds_sum`, `imqueue_latency_seconds_count`" in text


def _env_reads() -> dict[str, ast.expr | None]:
    """Each variable ``settings.py`` reads through ``env.<type>("NAME", default)``: its literal
    default expression (``None`` when there is none)."""
    reads: dict[str, ast.expr | None] = {}
    for node in ast.walk(ast.parse(SETTINGS_PY.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "env"
            and node.func.attr != "prefixed"  # the queue servers' IMQ_<NAME>_URL, from the backends
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            reads[node.args[0].value] = node.args[1] if len(node.args) > 1 else None
    return reads


def test_every_variable_settings_reads_is_declared_and_every_declared_one_is_read():
    declared = {variable.name for variable in VARIABLES}
    read = set(_env_reads())
    assert sorted(read - declared) == [], "read by settings.py: declare it in imqueue_site/environment.py"
    assert sorted(declared - read) == [], "declared in imqueue_site/environment.py but not read by settings.py"


def test_a_literal_default_in_settings_is_the_declared_one():
    declared = {variable.name: variable.default for variable in VARIABLES}
    literal = {
        name: ast.literal_eval(default)
        for name, default in _env_reads().items()
        if isinstance(default, (ast.Constant, ast.List)) and declared[name] is not None
    }
    # what settings.py writes (3600, "3600", True, a list) as the environment would hold it
    written = {
        name: ",".join(value) if isinstance(value, list) else str(value).lower() if isinstance(value, bool) else value
        for name, value in literal.items()
    }
    wrong = {name: value for name, value in written.items() if not _same(value, declared[name])}
    assert wrong == {}, "settings.py's default differs from imqueue_site/environment.py's"
    # today most defaults are literals; once settings.py takes them from the table, drop this line
    assert len(written) >= 15


def _same(value: object, declared: str | None) -> bool:
    """``value`` is ``declared``: as text, or as the same number (``2.0`` and ``"2"``)."""
    if str(value) == declared:
        return True
    try:
        return float(str(value)) == float(str(declared))
    except ValueError:
        return False
