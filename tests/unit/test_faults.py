"""Faults are objects the runner drives: checked first, applied before the start, polled after."""

import uuid

import pytest

from queues.backends.memory import MemoryBackend, MultiprocessBackend
from queues.errors import NotSupported
from queues.faults import Faults, KillConsumer, SendPoison, build
from queues.runner import SUCCEEDED, Runner
from queues.workload import WorkloadSpec


class Recorder:
    """A fault of a kind the runner has never heard of: it only records what it was told."""

    def __init__(self):
        self.checked, self.started, self.polls = [], 0, 0

    def check(self, backend):
        self.checked.append(backend.name)

    def before_start(self, run):
        assert all(w.ready for w in run.supervisor.workers)
        self.started += 1

    def poll(self, run):
        assert self.started == 1
        self.polls += 1


def test_the_runner_drives_any_fault_object():
    fault = Recorder()
    spec = WorkloadSpec(backend="memory-mp", events=3_000, batch=100)
    result = Runner(spec, MultiprocessBackend(), run_id=uuid.uuid4().hex[:8], faults=[fault]).run()
    assert result.status == SUCCEEDED and result.summary["verdict"] == "exact"
    assert fault.checked == ["memory-mp"] and fault.started == 1 and fault.polls >= 1


def test_declared_faults_build_their_objects_in_order():
    built = build(Faults(kill_consumer_after=10, poison_messages=2))
    assert [type(f) for f in built] == [SendPoison, KillConsumer]
    assert build(Faults()) == []


def test_killing_a_consumer_is_refused_where_workers_are_threads():
    spec = WorkloadSpec(backend="memory", events=10)
    with pytest.raises(NotSupported, match="threads"):
        Runner(spec, MemoryBackend(), run_id="t", faults=Faults(kill_consumer_after=1))


def test_a_killed_consumer_is_replaced_and_counted():
    spec = WorkloadSpec(backend="memory-mp", events=20_000, batch=100, idle_timeout_s=2)
    result = Runner(spec, MultiprocessBackend(), run_id=uuid.uuid4().hex[:8],
                    faults=Faults(kill_consumer_after=2_000)).run()
    assert result.status == SUCCEEDED and result.summary["killed_consumers"] == 1
    # memory-mp has no acks: what the victim held is lost, the replacement takes the rest
    assert result.summary["duplicates"] == 0 and 0 < result.summary["unique"] <= 20_000
