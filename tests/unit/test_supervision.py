"""Supervision alone: real forked workers on the in-memory backend, no runner around them."""

import multiprocessing
import os
import signal
import time
import uuid

import pytest

from queues.backends.memory import MultiprocessBackend
from queues.errors import BackendUnavailable, QueueError
from queues.workers.channel import ReportChannel, RunnerGone, SharedFlag
from queues.workers.context import WorkerContext
from queues.workers.reports import BatchReport, Done, Ready
from queues.workers.supervision import Supervisor
from queues.workload.spec import WorkloadSpec

WAIT_S = 30


class _NoConsumer(MultiprocessBackend):
    def consumer(self, queue, *, group="default"):
        raise BackendUnavailable("memory-mp: no server (simulated)")


@pytest.fixture
def make():
    made = []

    def make(backend=None, **fields):
        backend = backend or MultiprocessBackend()
        spec = WorkloadSpec(backend="memory-mp", **fields)
        queue = f"imq.sup.{uuid.uuid4().hex[:6]}"
        backend.connect()
        backend.declare(queue)
        ctx = multiprocessing.get_context("fork")
        context = WorkerContext(
            spec,
            backend,
            queue,
            None,
            SharedFlag(ctx),
            SharedFlag(ctx),
            ctx.Value("q", 0, lock=False),
            ctx.Array("q", spec.producers, lock=False),
        )
        messages = []
        supervisor = Supervisor(mp_context=ctx, context=context, threads=False, on_message=messages.append)
        made.append((supervisor, backend, queue))
        return supervisor, context, messages

    yield make
    for supervisor, backend, queue in made:
        supervisor.context.stop.set()
        supervisor.context.start.set()
        supervisor.stop()
        backend.delete(queue)
        backend.close()


def wait_for(condition, supervisor):
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "the condition was not met in time"
        supervisor.receive(0.05)
        supervisor.check()


def test_workers_get_ready_run_and_stop_and_every_message_is_handed_on(make):
    supervisor, context, messages = make(events=2_000, batch=100)
    consumer, producer = supervisor.spawn("consumer", 0), supervisor.spawn("producer", 0)
    supervisor.await_ready()
    assert consumer.ready and producer.ready and {consumer.pid, producer.pid} <= {m.pid for m in messages}
    assert all(isinstance(m, Ready) for m in messages)
    context.t0_ns.value = time.time_ns()
    context.start.set()
    received = lambda: sum(len(m.flat_indices) // 4 for m in messages if isinstance(m, BatchReport))  # noqa: E731
    wait_for(lambda: supervisor.producers_done() and received() == 2_000, supervisor)
    context.stop.set()
    supervisor.stop()
    supervisor.reap()  # the done workers exit (a producer once its queue was read)
    assert consumer.done and consumer.dead() and producer.dead() and supervisor.killed() == []
    assert {(m.role, m.index) for m in messages if isinstance(m, Done)} == {("consumer", 0), ("producer", 0)}


def test_a_worker_that_fails_fails_the_ready_barrier_with_its_error(make):
    supervisor, _, _ = make(backend=_NoConsumer(), events=10)
    supervisor.spawn("consumer", 0)
    with pytest.raises(QueueError, match=r"consumer 0: .*no server \(simulated\)"):
        supervisor.await_ready()


def test_a_killed_worker_is_replaced_whoever_killed_it(make):
    supervisor, _, _ = make(events=10, consumers=2)
    supervisor.replace_after_s = 0.0
    first, second = supervisor.spawn("consumer", 0), supervisor.spawn("consumer", 1)
    supervisor.await_ready()
    supervisor.kill(first, reason="a test")
    assert first.killed and first.dead() and supervisor.killed() == [first] and first.kill_reason == "a test"
    supervisor.check()  # killed on purpose: not a failure
    os.kill(second.pid, signal.SIGKILL)  # as the OOM killer would
    second.handle.join(timeout=WAIT_S)
    supervisor.check()  # killed from outside the run: replaced as well, not a failure
    assert second.killed and second.kill_reason == "killed from outside the run by SIGKILL"
    wait_for(lambda: len(supervisor.consumers()) == 4 and all(w.ready for w in supervisor.consumers()[2:]), supervisor)
    assert [w.index for w in supervisor.consumers()] == [0, 1, 2, 3] and supervisor.replaced == 2


class _EndsOnItsOwn(MultiprocessBackend):
    """A consumer that exits with status 3 at its first receive: not killed, not done."""

    def consumer(self, queue, *, group="default"):
        consumer = super().consumer(queue, group=group)
        consumer.receive_batch = lambda *args: os._exit(3)
        return consumer


def test_a_worker_ending_on_its_own_fails_the_run(make):
    supervisor, context, _ = make(backend=_EndsOnItsOwn(), events=10)
    worker = supervisor.spawn("consumer", 0)
    supervisor.await_ready()
    context.start.set()
    worker.handle.join(timeout=WAIT_S)
    with pytest.raises(QueueError, match=r"consumer 0 died unexpectedly \(exit code 3\)"):
        supervisor.check()
    assert supervisor.replacements == []


def test_a_report_to_a_runner_that_is_gone_raises_runner_gone():
    channel = ReportChannel(multiprocessing.get_context("fork"))
    channel.reader.close()  # what a dead runner leaves: nobody holds the read end
    with pytest.raises(RunnerGone):
        channel.send(Done("consumer", 0))
