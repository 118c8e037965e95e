#!/usr/bin/env python3
"""Set up and run imqueue from a fresh clone with nothing but Python 3.11+.

    python3 dev.py run [runexperiment options]   # sum 1e6 integers on the embedded default
    python3 dev.py test [pytest options]         # lint, type check, import contract, checks, the tests
                                                 # (installs chromium and promtool with apt where it can)
    python3 dev.py docs [mkdocs serve options]   # serve the docs at http://127.0.0.1:8001 while editing them

Both create ``.venv`` and install the project into it when ``pyproject.toml`` changed since the
last install, so running them again is fast.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"


def sh(*args: str | Path, **kwargs) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], cwd=ROOT, check=True, **kwargs)


def ensure_venv(extras: str) -> None:
    """Create the virtual environment and install the project (with ``extras``) if needed."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this script runs before the venv exists
        sys.exit(f"imqueue needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    stamp = VENV / ".imq-install-stamp"
    if stamp.exists() and stamp.read_text() == digest:
        return
    sh(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    sh(PYTHON, "-m", "pip", "install", "--quiet", "-e", f".{extras}")
    stamp.write_text(digest)


def run(args: list[str]) -> int:
    ensure_venv("")
    sh(PYTHON, "manage.py", "migrate", "--verbosity", "0")
    return subprocess.run([str(PYTHON), "manage.py", "runexperiment", *args], cwd=ROOT).returncode


#: Commands some tests drive, and the Debian packages that bring them: the browser test's
#: Chromium (driven by Playwright through ``executable_path``) and ``promtool`` for /metrics.
SYSTEM_TOOLS = {"chromium": "chromium", "promtool": "prometheus"}


def ensure_system_tools() -> None:
    """Install the Debian packages of ``SYSTEM_TOOLS`` that are missing, where this machine can
    (apt-get, as root or with password-less sudo); elsewhere say which tests will skip."""
    missing = [package for command, package in SYSTEM_TOOLS.items() if shutil.which(command) is None]
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if sudo is None or not shutil.which("apt-get"):
        print(
            f"note: {', '.join(missing)} not installed and cannot be installed here (needs apt-get as root): "
            "the tests that need them skip (and fail under CI=true)",
            flush=True,
        )
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        sh(*sudo, "apt-get", "update", "-qq", env=env)
        sh(*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, env=env)
    except subprocess.CalledProcessError:
        print(f"could not install {', '.join(missing)}: the tests that need them will fail or skip", flush=True)
    if "prometheus" in missing:  # only promtool is wanted: stop the server the package starts
        subprocess.run([*sudo, "service", "prometheus", "stop"], capture_output=True, check=False)


def test(args: list[str]) -> int:
    ensure_venv("[test,libraries]")  # the task-library backends are tested too
    ensure_system_tools()
    # what the checks and the tests' runs write for /metrics goes to a folder of their own, not to
    # the one a developer's web server reads (IMQ_METRICS_DIR's default)
    with tempfile.TemporaryDirectory(prefix="imqueue-test-metrics-") as metrics_dir:
        os.environ["IMQ_METRICS_DIR"] = metrics_dir
        sh(PYTHON, "-m", "ruff", "check", ".")
        sh(PYTHON, "-m", "ruff", "format", "--check", ".")
        sh(PYTHON, "-m", "mypy")  # queues/, as configured in pyproject.toml
        sh(VENV / "bin" / "lint-imports")  # the layering: [tool.importlinter] in pyproject.toml
        sh(PYTHON, "manage.py", "check")
        sh(PYTHON, "manage.py", "makemigrations", "--check", "--dry-run", "--verbosity", "0")
        with tempfile.TemporaryDirectory(prefix="imqueue-docs-") as site:  # strict: a broken link fails
            sh(VENV / "bin" / "mkdocs", "build", "--strict", "--quiet", "--site-dir", site, env=MKDOCS_ENV)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return subprocess.run([str(PYTHON), "-m", "pytest", *args], cwd=ROOT, env=env).returncode


#: Material for MkDocs prints a notice about its successor on every build; the build's own
#: warnings (which --strict makes errors) are what a reader of the output needs.
MKDOCS_ENV = dict(os.environ, NO_MKDOCS_2_WARNING="1")


def docs(args: list[str]) -> int:
    """Serve the docs site, rebuilt on every edit, beside the control room (which takes port 8000)."""
    ensure_venv("[test,libraries]")  # mkdocs is in the test extra; the same install as `test`
    serve = [str(VENV / "bin" / "mkdocs"), "serve", "--dev-addr", "127.0.0.1:8001", *args]
    try:
        return subprocess.run(serve, cwd=ROOT, env=MKDOCS_ENV).returncode
    except KeyboardInterrupt:  # Ctrl-C stops the server: not an error
        return 0


def main(argv: list[str]) -> int:
    commands = {"run": run, "test": test, "docs": docs}
    if not argv or argv[0] not in commands:
        print(__doc__.strip())
        return 2
    try:
        return commands[argv[0]](argv[1:])
    except subprocess.CalledProcessError as exc:
        return exc.returncode or 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
