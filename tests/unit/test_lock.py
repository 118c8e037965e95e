"""``requirements.lock`` pins every dependency of ``pyproject.toml`` (every extra) inside its
declared range; a change of the lock installs again; the Docker image installs with it."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import dev
from tests.support.lock import lock_disagreements, locked_pins

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT, LOCK = ROOT / "pyproject.toml", ROOT / "requirements.lock"


@pytest.fixture
def copies(tmp_path: Path) -> tuple[Path, Path]:
    """pyproject.toml and requirements.lock copied into a folder of the test's own."""
    return Path(shutil.copy(PYPROJECT, tmp_path)), Path(shutil.copy(LOCK, tmp_path))


def test_the_lock_pins_every_declared_dependency_inside_its_range():
    assert lock_disagreements(PYPROJECT, LOCK) == []
    pins, _ = locked_pins(LOCK)
    assert {"django", "celery", "procrastinate", "pytest", "uv"} <= set(pins)  # every extra is locked


def test_the_lock_says_how_to_regenerate_it():
    head = LOCK.read_text().splitlines()[:10]
    assert any("python3 dev.py lock" in line for line in head if line.startswith("#"))


def test_a_dependency_the_lock_does_not_pin_is_named(copies):
    pyproject, lock = copies
    text = pyproject.read_text()
    pyproject.write_text(text.replace('"reactivex>=6.1",', '"reactivex>=6.1",\n    "left-pad>=1.0",', 1))
    assert lock_disagreements(pyproject, lock) == [
        "left-pad (left-pad>=1.0) is not pinned in requirements.lock: run `python3 dev.py lock`"
    ]


def test_a_pin_outside_the_declared_range_is_named(copies):
    pyproject, lock = copies
    pinned = locked_pins(lock)[0]["rq"]
    lock.write_text(lock.read_text().replace(f"\nrq=={pinned}\n", "\nrq==3.1.0\n", 1))
    assert lock_disagreements(pyproject, lock) == [
        "requirements.lock pins rq==3.1.0, outside pyproject.toml's <3.1,>=3.0: run `python3 dev.py lock`"
    ]


def test_a_lock_line_that_is_not_an_exact_pin_is_named(copies):
    pyproject, lock = copies
    lock.write_text(lock.read_text() + "numpy>=2.4\n")
    problems = lock_disagreements(pyproject, lock)
    assert len(problems) == 1 and "'numpy>=2.4' is not an exact pin" in problems[0], problems


def test_a_change_of_the_lock_or_of_the_extras_installs_again(copies):
    pyproject, lock = copies
    before = dev.install_digest(pyproject, lock, "[test]")
    assert dev.install_digest(pyproject, lock, "[test]") == before
    assert dev.install_digest(pyproject, lock, "[test,libraries]") != before
    lock.write_text(lock.read_text().replace("\nrq==", "\nrq==0", 1))
    assert dev.install_digest(pyproject, lock, "[test]") != before


# -- docker/Dockerfile installs with it --------------------------------------------------------


def dockerfile_runs(path: Path) -> list[str]:
    """The arguments of each RUN, continuation lines joined and comments dropped."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [line.partition(" ")[2] for line in joined.splitlines() if line.startswith("RUN ")]


def test_the_docker_image_installs_the_site_and_the_libraries_at_the_locked_versions(tmp_path):
    dockerfile = ROOT / "docker" / "Dockerfile"
    assert re.search(r"^COPY (\S+ )*requirements\.lock (\S+ )*\./$", dockerfile.read_text(), re.M)
    (install,) = [run for run in dockerfile_runs(dockerfile) if "--constraint requirements.lock" in run]
    words = shlex.split(install)
    assert "-r" in words and words[words.index("-r") + 1] == "/tmp/requirements.txt"
    # the image's list of requirements, written by its own command from a copy of pyproject.toml
    code = words[words.index("-c") + 1]
    shutil.copy(PYPROJECT, tmp_path)
    listed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    assert listed.stdout.splitlines() == project["dependencies"] + project["optional-dependencies"]["libraries"]
