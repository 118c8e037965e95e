"""The README's backend options table says what the backends declare (so it cannot go stale)."""

from __future__ import annotations

from pathlib import Path

from queues.backends import BACKENDS, backend_class

README = Path(__file__).resolve().parents[2] / "README.md"
HEADER = "| backend | option | default | allowed | meaning |"


def readme_rows() -> dict[tuple[str, str], tuple[str, str]]:
    """``(backend, option) -> (default text, allowed text)`` from the README's options table."""
    lines = README.read_text().splitlines()
    start = lines.index(HEADER) + 2  # past the header and its --- line
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        backends, option, default, allowed, _meaning = (cell.strip() for cell in line.strip("|").split("|"))
        for backend in backends.split(","):
            key = (backend.strip().strip("`"), option.strip("`"))
            assert key not in rows, f"README lists {key} twice"
            rows[key] = (default.strip("`"), allowed)
    return rows


def declared_rows() -> dict[tuple[str, str], tuple[str, str]]:
    return {
        (alias, option.name): (readme_text(option.default), option.allowed())
        for alias in BACKENDS
        for option in backend_class(alias).options
    }


def readme_text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def test_the_readme_options_table_matches_the_declarations():
    readme, declared = readme_rows(), declared_rows()
    assert sorted(set(declared) - set(readme)) == [], "declared but missing from the README"
    assert sorted(set(readme) - set(declared)) == [], "in the README but not declared"
    wrong = {key: (readme[key], declared[key]) for key in declared if readme[key] != declared[key]}
    assert wrong == {}, "README (default, allowed) differs from the declaration"
