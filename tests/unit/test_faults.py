"""Faults are objects the runner drives: checked first, applied before the start, polled after."""

import uuid

import pytest

from queues.backends.memory import MemoryBackend, MultiprocessBackend
from queues.errors import NotSupported
from queues.faults.injectors import Faults, KillConsumer, SendPoison, build
from queues.run.result import RunStatus
from queues.run.runner import Runner
from queues.workload.spec import WorkloadSpec


class Recorder:
    """A fault of a kind the runner has never heard of: it only records what it was told."""

    def __init__(self):
        self.checked, self.started, self.polls, self.ended = [], 0, 0, 0

    def check(self, backend):
        self.checked.append(backend.name)

    def before_start(self, run):
        assert all(w.ready for w in run.supervisor.workers)
        self.started += 1

    def poll(self, run):
        assert self.started == 1
        self.polls += 1

    def end(self, run):
        self.ended += 1


def test_the_runner_drives_any_fault_object():
    fault = Recorder()
    spec = WorkloadSpec(backend="memory-mp", events=3_000, batch=100)
    result = Runner(spec, MultiprocessBackend(), run_id=uuid.uuid4().hex[:8], faults=[fault]).run()
    assert result.status == RunStatus.SUCCEEDED and result.summary["verdict"] == "exact"
    assert fault.checked == ["memory-mp"] and fault.started == 1 and fault.polls >= 1 and fault.ended == 1


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
    result = Runner(
        spec, MultiprocessBackend(), run_id=uuid.uuid4().hex[:8], faults=Faults(kill_consumer_after=2_000)
    ).run()
    assert result.status == RunStatus.SUCCEEDED and result.summary["killed_consumers"] == 1
    # memory-mp has no acks: what the victim held is lost, the replacement takes the rest
    assert result.summary["duplicates"] == 0 and 0 < result.summary["unique"] <= 20_000


# -- the faults of an experiment, at their times ----------------------------------------------

import os  # noqa: E402
import signal  # noqa: E402

from queues.faults.injectors import TimedFault  # noqa: E402
from queues.measurement.summary import guarantee_contradictions  # noqa: E402
from queues.workload.faults import FaultSpec  # noqa: E402


def steady_run(faults=(), extra=(), idle_timeout_s=1, **fields):
    spec = WorkloadSpec(
        backend="memory-mp",
        rate_eps=2_000,
        duration_s=4,
        consumers=2,
        batch=50,
        idle_timeout_s=idle_timeout_s,
        replace_after_s=0.2,
        faults=tuple(faults),
        **fields,
    )
    return Runner(spec, MultiprocessBackend(), run_id=uuid.uuid4().hex[:8], faults=list(extra)).run()


def test_timed_faults_act_at_their_time_are_marked_and_reported():
    # memory-mp's queue is a multiprocessing.Queue: a producer SIGKILLed inside a put can leave
    # its lock held (the tests of kill-producer use server backends, tests/contract)
    result = steady_run(["poison@0.5:3", "kill-consumer@1", "pause-consumer@2:0.5:1"])
    s = result.summary
    assert result.status == RunStatus.SUCCEEDED, result.error
    by_kind = {f["kind"]: f for f in s["faults"]}
    assert set(by_kind) == {"kill-consumer", "poison", "pause-consumer"}
    for fault in s["faults"]:
        assert fault["at_s"] <= fault["applied_at_s"] < fault["at_s"] + 1.0, fault
    assert by_kind["kill-consumer"]["outcome"].startswith("SIGKILL pid ")
    assert by_kind["poison"]["outcome"] == "3 malformed message(s) sent" and s["poison"] == 3
    kinds = [(m["kind"], m["target"]) for m in s["markers"]]
    for expected in [
        ("kill-consumer", "consumer 0"),
        ("replaced", "consumer 0"),
        ("pause-consumer", "consumer 1"),
        ("resume", "consumer 1"),
    ]:
        assert expected in kinds, kinds
    assert s["replaced_workers"] == 1 and [w["role"] for w in s["killed_workers"]] == ["consumer"]
    # the samples carry the same markers, each in the interval it happened in
    in_samples = [m for sample in result.samples for m in sample.markers or []]
    assert in_samples == s["markers"]
    for sample in result.samples:
        for m in sample.markers or []:
            assert m["t_s"] <= sample.t_s
    assert s["unique"] + s["lost"] == result.spec.events and s["corrupt"] == 0
    assert (
        guarantee_contradictions(
            guarantee="at-most-once",
            lost=s["lost"],
            duplicates=s["duplicates"],
            resend_bound=s["resend_bound"],
            redelivery_causes=2,
        )
        == []
    )


class KillFromOutside(TimedFault):
    """A user's ``kill -9`` of consumer 0: not a fault of the run, so the supervisor must notice."""

    def apply(self, run):
        os.kill(run.supervisor.find("consumer", 0).pid, signal.SIGKILL)
        return "killed behind the runner's back"


class NotPermitted(TimedFault):
    def apply(self, run):
        raise PermissionError(1, "Operation not permitted")


def test_a_worker_killed_from_outside_is_replaced_and_the_run_goes_on():
    result = steady_run(extra=[KillFromOutside(FaultSpec("kill-consumer", 1.0))])
    s = result.summary
    assert result.status == RunStatus.SUCCEEDED, result.error
    [killed] = s["killed_workers"]
    assert (killed["role"], killed["reason"]) == ("consumer", "killed from outside the run by SIGKILL")
    assert ("replaced", "consumer 0") in [(m["kind"], m["target"]) for m in s["markers"]]


def test_a_fault_that_cannot_be_applied_fails_the_run_with_its_reason():
    result = steady_run(extra=[NotPermitted(FaultSpec("kill-consumer", 0.5))])
    assert result.status == RunStatus.FAILED
    assert result.error == "fault kill-consumer@0.5 could not be applied: [Errno 1] Operation not permitted"


class RefusedAsTheRunEnds(TimedFault):
    """A slow fault (on a thread of its own) still at work when the run ends, then refused."""

    background = True

    def apply(self, run):
        self.run_ended.wait(30)
        raise PermissionError(1, "Operation not permitted")


def test_a_slow_fault_refused_as_the_run_ends_still_fails_the_run():
    result = steady_run(extra=[RefusedAsTheRunEnds(FaultSpec("cut-connections", 3.5))])
    assert result.status == RunStatus.FAILED
    assert result.error == "fault cut-connections@3.5 could not be applied: [Errno 1] Operation not permitted"
    [marker] = [m for m in result.summary["markers"] if m["kind"] == "cut-connections"]
    assert marker["outcome"].startswith("could not be applied")


def test_a_killed_memory_mp_producer_is_replaced_and_the_run_ends_with_every_event_accounted_for():
    # the replacement resumes the share; a producer killed inside a multiprocessing.Queue put may
    # leave the queue's lock held, and then what it could not send is reported lost: either way
    # the run ends, and nothing is made up or counted twice beyond the resend
    result = steady_run(["kill-producer@1"], idle_timeout_s=1)
    s = result.summary
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert ("replaced", "producer 0") in [(m["kind"], m["target"]) for m in s["markers"]]
    assert s["unique"] + s["lost"] == result.spec.events and s["corrupt"] == 0
    assert s["duplicates"] <= s["resend_bound"] and s["contradictions"] == []
