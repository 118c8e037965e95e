"""Helpers shared by the backend-specific suites: runs through the engine, and a one-shot
action fired from the runner's progress callback (to break a connection mid-run)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import numpy as np

from queues.events import encode_events, split_messages
from queues.runner import Faults, Runner, RunResult
from queues.workload import WorkloadSpec


def bodies(n: int) -> list[bytes]:
    seq = np.arange(n, dtype=np.int64)
    return list(split_messages(encode_events(0, seq, seq + 1, 0, 0), 1))


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


class OnceAfter:
    """A progress callback that runs ``action`` once in a thread when ``threshold`` events
    were counted (the runner's loop stays free to notice the failure)."""

    def __init__(self, threshold: int, action: Callable[[], None]) -> None:
        self.threshold, self.action = threshold, action
        self.thread: threading.Thread | None = None
        self.fired_at: float | None = None

    def __call__(self, unique: int, _events: int) -> None:
        if self.thread is None and unique >= self.threshold:
            self.fired_at = time.monotonic()
            self.thread = threading.Thread(target=self.action, daemon=True)
            self.thread.start()
