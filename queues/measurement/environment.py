"""What a run records about where it ran: Python, libraries, CPUs, clock, git revision."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("numpy", "hdrhistogram", "reactivex", "redis", "hiredis", "psycopg", "pika", "PyMySQL", "Django")
CLOCK = "time.time_ns() (CLOCK_REALTIME); figures across machines need synchronised clocks"


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_revision(path: Path | None = None) -> str | None:
    """The checkout's HEAD commit, or ``None`` outside a git checkout."""
    where = path or Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def collect(backend_environment: dict[str, Any] | None = None) -> dict[str, Any]:
    """The environment record of a run (JSON-ready)."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "libraries": library_versions(),
        "git_revision": git_revision(),
        "clock": CLOCK,
        "backend": backend_environment or {},
    }
