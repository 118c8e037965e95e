"""``dev.py``'s install decision: the stamp records the extras installed, so a command that needs
fewer installs nothing, and one that needs another extra installs it beside the others. The pip
calls are recorded instead of run (what they install is the lock's business, tested in
``test_lock.py``); the stamp and the files it digests are real, in a temporary folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import dev

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder with the real pyproject.toml and lock, a venv folder, and pip recorded."""
    for name in ("pyproject.toml", "requirements.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".venv").mkdir()
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(dev, "ROOT", tmp_path)
    monkeypatch.setattr(dev, "VENV", tmp_path / ".venv")
    monkeypatch.setattr(dev, "LOCK", tmp_path / "requirements.lock")
    monkeypatch.setattr(dev, "create_venv", lambda: None)
    monkeypatch.setattr(dev, "sh", lambda *args, **kwargs: calls.append(tuple(str(a) for a in args)))
    return tmp_path, calls


def installs(calls: list[tuple[str, ...]]) -> list[str]:
    """The ``-e .[extras]`` of each project install recorded."""
    return [call[call.index("-e") + 1] for call in calls if "-e" in call]


def test_fewer_extras_install_nothing_and_new_ones_install_beside_the_others(project):
    folder, calls = project
    dev.ensure_venv("[test,libraries]")
    assert installs(calls) == [".[libraries,test]"]
    dev.ensure_venv("")  # dev.py run / serve after dev.py test
    dev.ensure_venv("[test]")
    assert installs(calls) == [".[libraries,test]"]


def test_a_new_extra_keeps_the_installed_ones(project):
    folder, calls = project
    dev.ensure_venv("")
    dev.ensure_venv("[test]")
    assert installs(calls) == [".", ".[test]"]


def test_a_changed_lock_installs_again_with_what_is_asked(project):
    folder, calls = project
    dev.ensure_venv("[test]")
    (folder / "requirements.lock").write_text((folder / "requirements.lock").read_text() + "\n# changed\n")
    dev.ensure_venv("")
    assert installs(calls) == [".[test]", "."]


def test_extras_are_read_from_their_brackets():
    assert dev.extras_set("[test, libraries]") == {"test", "libraries"}
    assert dev.extras_set("") == set()
