"""The final drain and the verdict, on the in-memory backends (no server): a late duplicate is
seen, a corrupt record changes the verdict, a hung consumer is killed and reported with why."""

import uuid

import pytest

from queues.backends.memory import MemoryBackend, MultiprocessBackend
from queues.faults.injectors import DuplicateAtEnd, PauseConsumer, SendCorrupt
from queues.run.result import RunStatus
from queues.run.runner import Runner
from queues.workload.spec import WorkloadSpec

BACKENDS = [(MemoryBackend, "memory"), (MultiprocessBackend, "memory-mp")]


def run(cls, alias, faults=(), stop_timeout_s=10.0, **fields):
    spec = WorkloadSpec(backend=alias, **fields)
    runner = Runner(
        spec, cls(namespace="imqtest"), run_id=uuid.uuid4().hex[:8], faults=list(faults), stop_timeout_s=stop_timeout_s
    )
    return runner, runner.run()


@pytest.mark.parametrize("cls, alias", BACKENDS, ids=[a for _, a in BACKENDS])
def test_a_normal_run_drains_nothing_and_is_exact(cls, alias):
    runner, result = run(cls, alias, events=3_000, batch=100)
    s = result.summary
    assert result.status == RunStatus.SUCCEEDED and s["verdict"] == "exact" and s["verdict_reasons"] == []
    assert (s["recovered_at_end"], s["stuck"], s["killed_workers"], s["findings"]) == (0, 0, [], [])
    assert runner.drain is not None and not runner.drain.timed_out and runner.drain.messages == 0


@pytest.mark.parametrize("cls, alias", BACKENDS, ids=[a for _, a in BACKENDS])
def test_a_duplicate_sent_after_the_ledger_was_complete_is_counted(cls, alias):
    _, result = run(cls, alias, faults=[DuplicateAtEnd()], events=3_000, batch=100, consumers=2)
    s = result.summary
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert s["duplicates"] == 1 and s["verdict"] == "duplicated" and s["lost"] == 0 and s["stuck"] == 0
    assert s["sum"] == s["expected_sum"] + 1 and s["unique_sum"] == s["expected_sum"]


@pytest.mark.parametrize("cls, alias", BACKENDS, ids=[a for _, a in BACKENDS])
def test_a_corrupt_record_makes_the_verdict_say_so(cls, alias):
    _, result = run(cls, alias, faults=[SendCorrupt(1)], events=3_000, batch=100)
    s = result.summary
    assert s["corrupt"] == 1 and s["lost"] == s["duplicates"] == 0 and s["unique_sum"] == s["expected_sum"]
    assert s["sum"] == s["expected_sum"] + 2  # the wrong value was received, and is in the raw sum
    assert s["verdict"] == "corrupt" and "1 corrupt record(s)" in s["verdict_reasons"][0]


def test_a_consumer_hung_past_the_stop_timeout_is_killed_and_reported_with_its_reason():
    # a steady schedule keeps sending after the pause, so the drain has something to recover
    _, result = run(
        MultiprocessBackend,
        "memory-mp",
        faults=[PauseConsumer(after_events=300)],
        rate_eps=3_000,
        duration_s=1,
        batch=50,
        idle_timeout_s=0.5,
        stop_timeout_s=0.5,
    )
    s = result.summary
    assert s["killed_consumers"] == 1
    [killed] = s["killed_workers"]
    assert (killed["role"], killed["index"]) == ("consumer", 0)
    assert killed["reason"] == "hung past the stop timeout (0.5 s)" and killed["reported"] >= 300
    assert s["recovered_at_end"] > 0 and killed["new_after_kill"] == s["recovered_at_end"]
    assert s["stuck"] == 0 and s["unique"] + s["lost"] == s["events"]
    # memory-mp has no acks: what the frozen consumer had taken is gone, a finding, not a failure
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert bool(s["lost"]) == bool(s["findings"]) and s["duplicates"] == 0
