"""The benchmarks run in the .venv that ``dev.py run`` makes, which has no test tools: they must
not import pytest or the tests."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHES = sorted(p.stem for p in (ROOT / "bench").glob("bench_*.py"))


@pytest.mark.parametrize("name", BENCHES)
def test_a_benchmark_imports_without_pytest_or_the_tests(name):
    probe = (
        "import sys; sys.modules['pytest'] = None\n"  # None: any `import pytest` fails
        f"import bench.{name}\n"
        "assert not any(m == 'tests' or m.startswith('tests.') for m in sys.modules), 'imports the tests'\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
