"""Faults, as a contract over every backend that declares the capability they test: a consumer
SIGKILLed mid-run, the server dropping the run's connections, poison set aside as dead letters.

The assertions are about what could really go wrong, checked against things the ledger does not
derive from each other: the integers received (their raw sum) against the event ids counted,
and N(N+1)/2.
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest

from queues.errors import QueueError
from queues.runner import FAILED, SUCCEEDED, Faults, Runner
from queues.workload import WorkloadSpec
from tests.services import SIZE_FACTOR, bodies, count_deliveries, receive_batches, scaled, wait_until

#: The server-lost run follows a schedule, so that it is still under way when the cut comes
#: (``rabbitmqctl`` takes seconds) however fast the backend, and a backend that carries on
#: after the cut ends in about the same time however loaded the machine.
CUT_RATE_EPS, CUT_RUN_S = 10_000, 15
#: The task libraries (``SIZE_FACTOR``): a shorter run at their scaled rate (their cutters end
#: the run's clients within a second or two, rabbitmqctl included).
LIBRARY_CUT_RUN_S = 2.5
#: Findings, not failures: backends that bring back tasks already counted after a SIGKILL or a
#: lost connection. Celery with its default early acks on RabbitMQ, although it does not declare
#: redelivery (acks the killed worker had written may not reach the broker: a socket closed with
#: unread deliveries is reset, and what it had not sent yet is dropped); Dramatiq on RabbitMQ,
#: which reconnects by itself after a cut connection, redelivers what the cut left un-acked
#: (at-least-once, as declared). Their runs end ``duplicated``, never ``lost``.
DUPLICATES_AFTER_FAULTS = {"celery-rabbitmq", "dramatiq-rabbitmq"}
#: No fault test may hang: past this the run is cancelled, and the test fails on its status.
RUN_BOUND_S = 180


def value_sums(counts: np.ndarray) -> tuple[int, int]:
    """(sum of the values of the event ids counted at least once, the same with every extra
    delivery counted again), from per-id delivery counts: with one producer, event id ``i``
    carries the integer ``i + 1``."""
    values = np.arange(1, counts.size + 1, dtype=np.int64)
    return int(values[counts > 0].sum()), int((values * counts).sum())


def bounded_runner(backend, *, faults=None, on_progress=None, **fields) -> Runner:
    began = time.monotonic()
    return Runner(
        WorkloadSpec(backend=backend.name, **fields), backend, run_id=uuid.uuid4().hex[:8], faults=faults,
        on_progress=on_progress, should_cancel=lambda: time.monotonic() - began > RUN_BOUND_S,
    )


@pytest.mark.requires("processes")
def test_a_consumer_killed_mid_run_loses_nothing_where_redelivery_is_declared(backend):
    kill_after = scaled(backend, 5_000)
    runner = bounded_runner(
        backend, events=scaled(backend, 30_000), consumers=2, batch=100,
        # a library that loses the killed worker's task ends on the idle timeout: keep it short
        idle_timeout_s=2 if backend.name in SIZE_FACTOR else 5, faults=Faults(kill_consumer_after=kill_after),
    )
    deliveries = count_deliveries(runner.ledger)
    result = runner.run()
    s, expected = result.summary, runner.spec.expected_sum
    assert result.status == SUCCEEDED, f"{result.status}: {result.error}"
    assert s["killed_consumers"] == 1 and s["corrupt"] == 0
    [killed] = s["killed_workers"]
    assert (killed["role"], killed["index"], killed["reason"]) == ("consumer", 0, f"fault: kill after {kill_after:,} events")
    unique_values, delivered_values = value_sums(deliveries)
    assert s["sum"] == delivered_values  # the integers received are the ids counted, duplicates included
    if backend.capabilities.redelivers_on_crash:
        assert s["lost"] == 0, s
        assert s["unique_sum"] == unique_values == expected
        # what the victim had taken but not acked came back: duplicates, counted, never hidden
        assert s["verdict"] == ("duplicated" if s["duplicates"] else "exact")
    else:
        # at-most-once: nothing twice (but see DUPLICATES_AFTER_FAULTS), and exactly what never
        # arrived is reported lost
        assert s["duplicates"] == 0 or backend.name in DUPLICATES_AFTER_FAULTS, s
        lost_ids = np.flatnonzero(~runner.ledger.seen(np.arange(runner.spec.events)))
        assert s["lost"] == lost_ids.size
        assert s["unique_sum"] == expected - int((lost_ids + 1).sum())
        if not s["duplicates"]:
            assert s["sum"] == s["unique_sum"] and s["verdict"] == ("lost" if lost_ids.size else "exact")


@pytest.mark.requires("server")
def test_a_server_lost_mid_run_fails_the_run_with_its_counts_or_carries_on_exactly(backend, cut_connections):
    """README "A server lost mid-run": the run ends failed, keeping what was counted, or (where
    the driver replaces a connection that died between commands) carries on and is exact."""
    cut, cut_at = [], []
    cutter = threading.Thread(target=lambda: cut_until_one(), daemon=True)

    def on_progress(unique: int, _events: int) -> None:
        if unique >= scaled(backend, 5_000) and not cutter.is_alive() and not cut_at:
            cut_at.append(time.monotonic())
            cutter.start()  # from a thread: the runner's loop stays free to notice the failure

    def cut_until_one() -> None:
        cut.append(wait_until(lambda: cut_connections(backend, runner.queue), 30, "a connection of the run to cut"))

    run_s = LIBRARY_CUT_RUN_S if backend.name in SIZE_FACTOR else CUT_RUN_S
    runner = bounded_runner(backend, rate_eps=scaled(backend, CUT_RATE_EPS), duration_s=run_s, consumers=2, batch=200,
                            idle_timeout_s=2 if backend.name in SIZE_FACTOR else 5, on_progress=on_progress)
    deliveries = count_deliveries(runner.ledger)
    result = runner.run()
    if cut_at:
        cutter.join(timeout=60)  # the run may fail before the cutter has counted what it closed
    s = result.summary
    assert cut, f"the run ended ({result.status}) before its connections could be cut"
    unique_values, delivered_values = value_sums(deliveries)
    assert s["corrupt"] == 0 and s["sum"] == delivered_values and s["unique_sum"] == unique_values
    if result.status == FAILED:
        assert backend.url_setting in result.error, result.error  # says which server, and where it is set
        assert scaled(backend, 5_000) <= s["unique"] < runner.spec.events  # what was counted until then is kept
        assert time.monotonic() - cut_at[0] < 60  # every wait has a timeout: no hang on a dead server
    else:
        assert result.status == SUCCEEDED, f"{result.status}: {result.error}"
        if backend.name in DUPLICATES_AFTER_FAULTS and s["duplicates"]:
            assert s["verdict"] == "duplicated" and s["lost"] == 0, s
        else:
            assert s["verdict"] == "exact" and s["sum"] == runner.spec.expected_sum, s


@pytest.mark.requires("acks")
def test_poison_nacked_without_requeue_comes_back_as_dead_letters(backend, queue_name):
    good, poison = bodies(5), [b"not an event", b"\x00" * 31]
    producer = backend.producer(queue_name)
    producer.send_batch([good[0], poison[0], *good[1:3], poison[1], *good[3:]])
    producer.close()
    consumer = backend.consumer(queue_name)

    def settle(batch) -> None:
        bad = [i for i, body in enumerate(batch.bodies) if bytes(body) in poison]
        consumer.nack(batch.subset(bad), requeue=False)
        consumer.ack(batch.subset([i for i in range(len(batch)) if i not in bad]))

    receive_batches(consumer, 7, settle=settle)  # each batch as it comes
    consumer.close()  # sends acks a backend defers

    # Some brokers dead-letter asynchronously, and a read may take the letters off the
    # dead-letter queue (RabbitMQ) or leave them there (Redis, SQL): gather distinct bodies.
    seen: list[bytes] = []

    def all_poison_seen() -> bool:
        try:
            letters = [bytes(body) for body in backend.dead_letters(queue_name)]
        except QueueError as exc:
            pytest.fail(f"{backend.name}: dead_letters() raised {exc!r}")
        seen.extend(body for body in letters if body not in seen)
        return len(seen) >= len(poison)

    wait_until(all_poison_seen, 10, f"the poison in {backend.name}'s dead letters")
    assert sorted(seen) == sorted(poison)
    if backend.capabilities.depth:
        assert backend.depth(queue_name) == 0
