"""The layering in ``pyproject.toml`` (``[tool.importlinter]``) is a contract that fails the run
when it is broken: checked here on the tree as it is, and on a copy of the tree with a cycle put
in, which ``lint-imports`` must refuse. (``dev.py test`` runs ``lint-imports`` too; this test
shows that the check can fail.)"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("imqueue_site", "experiments", "queues")

pytestmark = pytest.mark.skipif(
    not LINT_IMPORTS.exists(), reason="import-linter is not installed (pip install -e '.[test]')"
)


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """The three packages and the contract, copied: the check reads the copy, never our tree."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract(tree_copy: Path) -> None:
    result = lint_imports(tree_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_cycle_between_engine_packages_breaks_the_contract(tree_copy: Path) -> None:
    # the workload (a low layer) importing the runner (a high one) closes a cycle
    events = tree_copy / "queues" / "workload" / "events.py"
    events.write_text(events.read_text() + "\nfrom queues.run import runner  # noqa: E402,F401\n")
    result = lint_imports(tree_copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "The engine's layers BROKEN" in result.stdout
    assert "No import cycle among siblings, at any depth BROKEN" in result.stdout


def test_the_engine_importing_django_breaks_the_contract(tree_copy: Path) -> None:
    ledger = tree_copy / "queues" / "measurement" / "ledger.py"
    ledger.write_text(ledger.read_text() + "\nimport django  # noqa: E402,F401\n")
    result = lint_imports(tree_copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "The engine runs without Django" in result.stdout and "BROKEN" in result.stdout


def test_the_models_calling_up_into_the_services_breaks_the_contract(tree_copy: Path) -> None:
    models = tree_copy / "experiments" / "models.py"
    models.write_text(models.read_text() + "\nfrom experiments.services import runs  # noqa: E402,F401\n")
    result = lint_imports(tree_copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "The app's layers: edges over services over reads over models BROKEN" in result.stdout
