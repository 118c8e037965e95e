"""Helpers shared by the backend-specific suites: runs through the engine."""

from __future__ import annotations

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
        backend, events=30_000, consumers=2, batch=100, idle_timeout_s=5,
        faults=Faults(kill_consumer_after=5_000), **spec_fields,
    )
    assert result.status == "succeeded", result.error
    assert result.summary["killed_consumers"] == 1
    return spec, result.summary
