"""Runs through the engine, in the test's own process: ``run`` (and ``kill_run``, a consumer
SIGKILLed mid-batch) for the backend-specific suites, ``bounded_runner`` for the contract's
fault tests (a runner that cancels itself past ``RUN_BOUND_S``)."""

from __future__ import annotations

import time
import uuid

from queues.run.runner import Faults, Runner, RunResult
from queues.workload.spec import WorkloadSpec


def run(backend, *, faults: Faults | None = None, on_progress=None, **spec_fields) -> tuple[WorkloadSpec, RunResult]:
    spec = WorkloadSpec(backend=backend.name, **spec_fields)
    runner = Runner(spec, backend, run_id=uuid.uuid4().hex[:8], faults=faults, on_progress=on_progress)
    return spec, runner.run()


def kill_run(backend, **spec_fields) -> tuple[WorkloadSpec, dict]:
    """A run whose consumer 0 is SIGKILLed mid-batch (and replaced)."""
    spec, result = run(
        backend,
        events=30_000,
        consumers=2,
        batch=100,
        idle_timeout_s=5,
        faults=Faults(kill_consumer_after=5_000),
        **spec_fields,
    )
    assert result.status == "succeeded", result.error
    assert result.summary["killed_consumers"] == 1
    return spec, result.summary


#: No fault test may hang: past this the run is cancelled, and the test fails on its status.
RUN_BOUND_S = 180


def bounded_runner(backend, *, faults=None, on_progress=None, **fields) -> Runner:
    began = time.monotonic()
    return Runner(
        WorkloadSpec(backend=backend.name, **fields),
        backend,
        run_id=uuid.uuid4().hex[:8],
        faults=faults,
        on_progress=on_progress,
        should_cancel=lambda: time.monotonic() - began > RUN_BOUND_S,
    )
