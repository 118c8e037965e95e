"""``requirements.lock`` against ``pyproject.toml``: ``lock_disagreements()`` lists every
dependency the lock leaves unpinned or pins outside the range pyproject.toml declares."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

import dev

#: What the lock is resolved for (``dev.py lock``): a marker of pyproject.toml is read for it.
LOCKED_FOR = {
    "python_version": ".".join(dev.LOCK_PYTHON.split(".")[:2]),
    "python_full_version": dev.LOCK_PYTHON,
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": dev.LOCK_PLATFORM.split("-")[0],
}
REGENERATE = "run `python3 dev.py lock`"


def declared_requirements(pyproject: Path) -> list[Requirement]:
    """The project's dependencies and those of every extra, as pyproject.toml declares them."""
    project = tomllib.loads(pyproject.read_text())["project"]
    declared = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        declared += extra
    return [Requirement(text) for text in declared]


def locked_pins(lock: Path) -> tuple[dict[str, str], list[str]]:
    """The lock's pins (canonical name -> version) and what in it is not an exact pin."""
    pins: dict[str, str] = {}
    problems: list[str] = []
    for number, line in enumerate(lock.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            problems.append(f"{lock.name} line {number}: {text!r} is not a requirement ({exc})")
            continue
        exact = [spec for spec in requirement.specifier if spec.operator == "=="]
        if len(exact) != 1 or len(requirement.specifier) != 1:
            problems.append(f"{lock.name} line {number}: {text!r} is not an exact pin (name==version)")
            continue
        pins[canonicalize_name(requirement.name)] = exact[0].version
    return pins, problems


def lock_disagreements(pyproject: Path, lock: Path) -> list[str]:
    """One line for each way ``lock`` and ``pyproject`` disagree; empty when the lock pins every
    declared dependency (of every extra) inside its declared range."""
    pins, problems = locked_pins(lock)
    for requirement in declared_requirements(pyproject):
        if requirement.marker is not None and not requirement.marker.evaluate(LOCKED_FOR):
            continue  # not installed where the lock is for: it need not pin it
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement.name} ({requirement}) is not pinned in {lock.name}: {REGENERATE}")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(
                f"{lock.name} pins {requirement.name}=={pins[name]}, outside {pyproject.name}'s "
                f"{requirement.specifier}: {REGENERATE}"
            )
    return problems
