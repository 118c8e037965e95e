"""The ledger's hot path: ``add_indices`` as a 1e6 burst feeds it (1000 reports of 1000 indices).

    .venv/bin/python bench/bench_ledger.py [--reference REV]

Times 1000 calls of ``add_indices`` with 1000 sorted indices (a producer's run in order, the
burst's case) and with the same indices shuffled (several consumers, redeliveries), then one
``result()``; best of 5. With ``--reference REV`` (a git revision, e.g. the one before the
bitmap, 97b9269) the ledger of that revision is timed in the same run, alternating, so that a
loaded machine skews both alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from queues.measurement.ledger import Ledger  # noqa: E402
from queues.workload.spec import WorkloadSpec  # noqa: E402

EVENTS, CALL = 1_000_000, 1_000


def ledger_at(revision: str) -> Any:
    """The ``Ledger`` class of ``queues/measurement/ledger.py`` at a git revision."""
    source = subprocess.run(
        ["git", "show", f"{revision}:queues/measurement/ledger.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "reference_ledger.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("reference_ledger", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["reference_ledger"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.Ledger


def timed(cls: Any, batches: list[np.ndarray]) -> tuple[float, float]:
    """Best of 5: seconds for every ``add_indices``, and for one ``result()``."""
    best_add = best_result = float("inf")
    for _ in range(5):
        ledger = cls(WorkloadSpec(events=EVENTS))
        began = time.perf_counter()
        for batch in batches:
            ledger.add_indices(batch, 0)
        best_add = min(best_add, time.perf_counter() - began)
        began = time.perf_counter()
        result = ledger.result()
        best_result = min(best_result, time.perf_counter() - began)
        assert result.unique == EVENTS
    return best_add, best_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", help="a git revision whose ledger to time alongside")
    args = parser.parse_args()
    ledgers = {"this tree": Ledger}
    if args.reference:
        ledgers[args.reference] = ledger_at(args.reference)
    in_order = [np.arange(i, i + CALL, dtype=np.uint32) for i in range(0, EVENTS, CALL)]
    rng = np.random.default_rng(1)
    shuffled = [rng.permutation(batch) for batch in in_order]
    for case, batches in (("sorted", in_order), ("shuffled", shuffled)):
        for name, cls in ledgers.items():
            add_s, result_s = timed(cls, batches)
            print(
                f"  {case:9s} {name:10s} add_indices x{len(batches)}: {add_s * 1e3:7.1f} ms "
                f"({add_s * 1e6 / len(batches):6.1f} us a call); result(): {result_s * 1e3:6.1f} ms"
            )


if __name__ == "__main__":
    main()
