"""The final drain, as a contract over the backends: a consumer frozen with SIGSTOP (never
resumed) holds what it took, the run's stop kills it, the server releases what it held, and the
drain reads it back: nothing the queue still had is reported lost. A duplicate sent after the
ledger was complete, a corrupt record and poison all reach the verdict."""

from __future__ import annotations

import time
import uuid

import pytest

from queues.faults.injectors import DuplicateAtEnd, PauseConsumer, SendCorrupt, SendPoison
from queues.run.result import RunStatus
from queues.run.runner import Runner
from queues.workload.spec import WorkloadSpec
from tests.support.messages import scaled

#: No run here may hang: past this it is cancelled, and the test fails on its status.
RUN_BOUND_S = 120


def bounded_run(backend, faults, *, stop_timeout_s: float = 10.0, **fields):
    began = time.monotonic()
    runner = Runner(
        WorkloadSpec(backend=backend.name, **fields),
        backend,
        run_id=uuid.uuid4().hex[:8],
        faults=faults,
        should_cancel=lambda: time.monotonic() - began > RUN_BOUND_S,
        stop_timeout_s=stop_timeout_s,
    )
    return runner, runner.run()


@pytest.mark.requires("processes", "redelivers_on_crash")
def test_a_consumer_frozen_mid_run_loses_nothing_after_the_final_drain(backend):
    # one consumer on a schedule: after the pause the producer keeps sending for over a second
    # and nobody else reads, so the drain has events to recover whatever the machine's speed;
    # what the frozen consumer held (prefetched, claimed, in its open transaction) comes back
    # only if killing it released it
    runner, result = bounded_run(
        backend,
        [PauseConsumer(after_events=scaled(backend, 500))],
        stop_timeout_s=0.5,
        rate_eps=scaled(backend, 2_000),
        duration_s=1.5,
        batch=50,
        idle_timeout_s=0.5,
    )
    s = result.summary
    assert result.status == RunStatus.SUCCEEDED, f"{result.status}: {result.error}; {s}"
    assert s["lost"] == 0 and s["recovered_at_end"] > 0, s
    assert s["unique_sum"] == s["expected_sum"] and s["corrupt"] == s["poison"] == 0
    assert s["verdict"] in ("exact", "duplicated") and s["stuck"] == 0
    if s["verdict"] == "exact":
        assert s["sum"] == s["expected_sum"]
    [killed] = s["killed_workers"]
    assert (killed["role"], killed["index"]) == ("consumer", 0)
    assert killed["reason"] == "hung past the stop timeout (0.5 s)"
    assert runner.drain is not None and not runner.drain.timed_out


def test_a_duplicate_sent_at_the_very_end_is_counted(backend):
    _, result = bounded_run(
        backend,
        [DuplicateAtEnd()],
        events=scaled(backend, 2_000, at_least=50),
        consumers=2,
        batch=100,
        idle_timeout_s=3,
    )
    s = result.summary
    assert result.status == RunStatus.SUCCEEDED, f"{result.status}: {result.error}"
    assert s["duplicates"] == 1 and s["verdict"] == "duplicated" and s["lost"] == 0 and s["stuck"] in (0, None)
    assert s["sum"] == s["expected_sum"] + 1


def test_a_corrupt_record_and_poison_make_the_verdict_say_so(backend):
    _, result = bounded_run(
        backend,
        [SendCorrupt(1), SendPoison(2)],
        events=scaled(backend, 2_000, at_least=50),
        batch=100,
        idle_timeout_s=3,
    )
    s = result.summary
    assert (s["corrupt"], s["poison"], s["lost"], s["duplicates"]) == (1, 2, 0, 0), s
    assert s["verdict"] == "corrupt" and len(s["verdict_reasons"]) == 2
    assert s["unique_sum"] == s["expected_sum"] != s["sum"]
