"""The runner's own connection (the control connection: declare, depth samples, delete) lost
mid-run, on every server backend: it is replaced, the run keeps its counts and its verdict,
and the queue is still removed at the end.

The server itself ends the control connection (``tests/support/faults.py``, ``CONTROL_CUTTERS``),
found by the name the backend gives it; the workers' connections are left alone.
"""

from __future__ import annotations

import logging
import time

import pytest

from queues.backends._redis import RedisBase, keys_pattern
from queues.backends.libraries.base import LibraryBackend
from queues.backends.sqlfiles import table_name
from queues.errors import OperationFailed
from queues.run.accounting import Accounting
from queues.run.drain import final_drain
from queues.run.result import RunStatus
from queues.workload.spec import WorkloadSpec
from tests.support.faults import CONTROL_CUTTERS
from tests.support.messages import SIZE_FACTOR, bodies, scaled
from tests.support.runs import bounded_runner
from tests.support.servers import connected_backend
from tests.support.waiting import wait_until

RECONNECT_LINE = "the control connection was lost"


def reconnects_itself(backend) -> bool:
    """redis-py's pool checks a connection's socket before each command and replaces one the
    server closed in between, so no error reaches the backend (and nothing is logged)."""
    return isinstance(backend, RedisBase)


def cut_control(backend) -> int:
    """End ``backend``'s control connection on the server, waiting until the server has seen it
    (``rabbitmqctl`` lists a new connection after a moment)."""
    if backend.name not in CONTROL_CUTTERS:
        pytest.fail(f"{backend.name} has a server but tests/support/faults.py has no way to cut its control connection")
    return wait_until(lambda: CONTROL_CUTTERS[backend.name](backend), 30, f"{backend.name}'s control connection")


def queue_exists(alias: str, queue: str) -> bool:
    """Whether anything of ``queue`` is on the server, asked on a connection of its own."""
    probe = connected_backend(alias)
    try:
        if isinstance(probe, LibraryBackend):  # what a task library names its keys, queues, rows
            return probe.queue_exists(queue)
        if hasattr(probe, "count_objects"):  # the SQL backends: the queue's tables
            return probe.count_objects(table_name(queue)) > 0
        if isinstance(probe, RedisBase):
            return any(True for _ in probe.client.scan_iter(match=keys_pattern(queue)))
        try:  # AMQP: a passive declare of a missing queue is refused
            probe.depth(queue)
        except OperationFailed:
            return False
        return True
    finally:
        probe.close()


@pytest.mark.requires("server")
def test_a_control_operation_on_a_lost_control_connection_reconnects(backend, caplog):
    queue = f"{backend.namespace}.ctl"
    backend.declare(queue)
    producer = backend.producer(queue)
    producer.send_batch(bodies(3))
    producer.close()
    assert queue_exists(backend.name, queue)

    cut_control(backend)
    with caplog.at_level(logging.INFO, logger="queues"):
        depth = backend.reconnecting(backend.depth, queue) if backend.capabilities.depth else None
        cut_control(backend)
        backend.reconnecting(backend.delete, queue)
    if backend.capabilities.depth:
        assert depth == 3
    assert not queue_exists(backend.name, queue)
    reconnects = [r for r in caplog.records if RECONNECT_LINE in r.getMessage()]
    assert len(reconnects) == (0 if reconnects_itself(backend) else 2), caplog.text
    assert all(r.levelno == logging.INFO for r in reconnects), caplog.text


@pytest.mark.requires("server")
def test_the_control_connection_cut_mid_run_keeps_the_run_exact_and_removes_the_queue(backend, caplog):
    """A steady run (so that it is still under way after the cut, which takes seconds on
    RabbitMQ); the cut is made from the runner's own loop, so it comes before the next depth
    sample and the end of the run."""
    cut_at: list[float] = []

    def on_progress(unique: int, _events: int) -> None:
        if unique >= scaled(backend, 2_000) and not cut_at:
            cut_control(backend)
            cut_at.append(time.monotonic())

    duration_s = 1.5 if backend.name in SIZE_FACTOR else 3  # a task library's run: its workers take a second to stop
    runner = bounded_runner(
        backend,
        rate_eps=scaled(backend, 5_000),
        duration_s=duration_s,
        batch=100,
        idle_timeout_s=5,
        on_progress=on_progress,
    )
    with caplog.at_level(logging.INFO, logger="queues"):
        result = runner.run()
    s = result.summary
    assert cut_at, f"the run ended ({result.status}) before its control connection was cut"
    assert result.status == RunStatus.SUCCEEDED, f"{result.status}: {result.error}"
    assert s["verdict"] == "exact" and s["sum"] == runner.spec.expected_sum, s
    assert reconnects_itself(backend) or any(RECONNECT_LINE in r.getMessage() for r in caplog.records), caplog.text
    if backend.capabilities.depth:  # the samples after the cut measured the queue again
        after = [x for x in result.samples if runner.clock.t0 + x.t_s > cut_at[0]]
        assert any(x.depth is not None for x in after), [(x.t_s, x.depth) for x in result.samples]
    assert not queue_exists(backend.name, runner.queue)


@pytest.mark.requires("server", "depth")
def test_the_final_drain_reads_the_queue_on_a_control_connection_lost_just_before_it(backend):
    """The server ends the runner's control connection after its last depth sample and before
    the final drain (a loaded machine can end a run between the two): the drain reopens it, as
    every control operation of the runner does, and reads what the queue still holds."""
    spec = WorkloadSpec(backend=backend.name, events=5)
    queue = f"{backend.namespace}.drain"
    backend.declare(queue)
    producer = backend.producer(queue)
    producer.send_batch(bodies(5))
    producer.close()
    assert backend.depth(queue) == 5  # the control connection is open and in use
    cut_control(backend)
    try:
        drained = final_drain(backend=backend, queue=queue, accounting=(accounting := Accounting(spec)))
    finally:
        backend.reconnecting(backend.delete, queue)
    assert (drained.recovered, drained.stuck) == (5, 0)
    assert accounting.ledger.complete
