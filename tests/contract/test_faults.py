"""Faults, as a contract over every backend that declares the capability they test: a consumer
SIGKILLed mid-run, the server dropping the run's connections, poison set aside as dead letters.

The assertions are about what could really go wrong, checked against things the ledger does not
derive from each other: the integers received (their raw sum) against the event ids counted,
and N(N+1)/2.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from queues.errors import QueueError
from queues.run.result import RunStatus
from queues.run.runner import Faults, Runner
from queues.workload.spec import WorkloadSpec
from tests.support.messages import SIZE_FACTOR, bodies, count_deliveries, receive_batches, scaled
from tests.support.runs import RUN_BOUND_S, bounded_runner
from tests.support.waiting import wait_until

#: Findings, not failures: backends that bring back tasks already counted after a SIGKILL.
#: Celery with its default early acks on RabbitMQ, although it does not declare redelivery
#: (acks the killed worker had written may not reach the broker: a socket closed with unread
#: deliveries is reset, and what it had not sent yet is dropped). Its runs end ``duplicated``,
#: and the summary lists the contradiction with its declared guarantee.
DUPLICATES_AFTER_FAULTS = {"celery-rabbitmq"}


def value_sums(counts: np.ndarray) -> tuple[int, int]:
    """(sum of the values of the event ids counted at least once, the same with every extra
    delivery counted again), from per-id delivery counts: with one producer, event id ``i``
    carries the integer ``i + 1``."""
    values = np.arange(1, counts.size + 1, dtype=np.int64)
    return int(values[counts > 0].sum()), int((values * counts).sum())


@pytest.mark.requires("processes")
def test_a_consumer_killed_mid_run_loses_nothing_where_redelivery_is_declared(backend):
    kill_after = scaled(backend, 5_000)
    runner = bounded_runner(
        backend,
        events=scaled(backend, 30_000),
        consumers=2,
        batch=100,
        # a library that loses the killed worker's task ends on the idle timeout: keep it short
        idle_timeout_s=2 if backend.name in SIZE_FACTOR else 5,
        faults=Faults(kill_consumer_after=kill_after),
    )
    deliveries = count_deliveries(runner.ledger)
    result = runner.run()
    s, expected = result.summary, runner.spec.expected_sum
    assert result.status == RunStatus.SUCCEEDED, f"{result.status}: {result.error}"
    assert s["killed_consumers"] == 1 and s["corrupt"] == 0
    [killed] = s["killed_workers"]
    assert (killed["role"], killed["index"], killed["reason"]) == (
        "consumer",
        0,
        f"fault: kill after {kill_after:,} events",
    )
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


#: One steady run per server backend takes every fault an experiment can declare, each at its
#: time (far enough apart to tell their markers apart), and must come out whole: what was sent
#: is what was counted, and the outcome is what the backend's guarantee allows.
#: The cut comes first: ``rabbitmqctl`` starts an Erlang VM a call, seconds on a loaded machine.
EVERY_FAULT = ("poison@0.5:2", "cut-connections@1", "kill-consumer@2.5", "kill-producer@3", "pause-consumer@4:0.5:1")
EVERY_FAULT_RUN = {
    "rate_eps": 2_000,
    "duration_s": 6,
    "consumers": 2,
    "batch": 100,
    "idle_timeout_s": 5,
    "replace_after_s": 0.3,
}


def fault_run(backend, faults, **fields) -> tuple[Runner, np.ndarray]:
    began = time.monotonic()
    spec = WorkloadSpec(backend=backend.name, faults=faults, **{**EVERY_FAULT_RUN, **fields})
    runner = Runner(
        spec, backend, run_id=uuid.uuid4().hex[:8], should_cancel=lambda: time.monotonic() - began > RUN_BOUND_S
    )
    return runner, count_deliveries(runner.ledger)


@pytest.mark.requires("processes", "cuts")
def test_every_fault_of_an_experiment_leaves_the_run_whole_and_within_its_guarantee(backend):
    """Faults (docs/how-to/faults.md): kill, pause, cut, poison on a real server; the workers are replaced or
    reconnect, and the guarantee contradiction check (``guarantee_contradictions``) finds none."""
    runner, deliveries = fault_run(backend, EVERY_FAULT)
    result = runner.run()
    s = result.summary
    assert result.status == RunStatus.SUCCEEDED, f"{result.status}: {result.error}"
    for fault in s["faults"]:
        assert fault["applied_at_s"] is not None and not fault["outcome"].startswith("could not"), fault
    kinds = [(m["kind"], m["target"]) for m in s["markers"]]
    for expected in [
        ("replaced", "consumer 0"),
        ("replaced", "producer 0"),
        ("resume", "consumer 1"),
        ("cut-connections", "connections"),
    ]:
        assert expected in kinds, kinds
    assert s["reconnects"] == sum(1 for kind, _ in kinds if kind == "reconnect")
    assert s["poison"] == 2 and s["corrupt"] == 0 and s["verdict"] != "corrupt"  # the injected poison, set aside
    unique_values, delivered_values = value_sums(deliveries)
    assert s["sum"] == delivered_values and s["unique_sum"] == unique_values  # counted is what arrived
    assert s["guarantee"] == backend.capabilities.guarantee()
    assert s["contradictions"] == [], s["contradictions"]
    if backend.capabilities.guarantee() == "at-least-once" and backend.capabilities.confirmed_sends:
        assert s["lost"] == 0 and s["unique_sum"] == runner.spec.expected_sum
    elif s["lost"]:  # a killed producer's unconfirmed sends (RabbitMQ without confirms): a finding, said so
        assert any("lost:" in finding for finding in s["findings"]), s["findings"]


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
