"""The SQL-table backends against the real servers: delivery, a claim held by a killed process,
garbage, plans, polling and NOTIFY (killed consumers mid-run, lost servers and dead letters:
tests/contract/test_faults.py).

The shared contract suite covers the interface; these tests cover what the
table queues must do in particular. Each skips when its server is down (fails under ``CI=true``).
"""

from __future__ import annotations

import os
import signal
import statistics
import time
import uuid

import numpy as np
import psycopg
import pytest

from queues.backends.polling import Poller
from queues.backends.sqlfiles import queue_of_object, table_name, table_prefix
from queues.run.result import RunStatus
from queues.run.runner import Runner
from queues.workload.events import encode_events, split_messages
from queues.workload.spec import WorkloadSpec
from tests.support.servers import backend_url, connected_backend
from tests.support.waiting import wait_until

SQL_BACKENDS = ["postgres", "postgres-notify", "mysql"]


@pytest.fixture(params=SQL_BACKENDS)
def sql_backend(request):
    """Named apart from the root conftest's ``backend``, which spans every registered backend."""
    b = connected_backend(request.param)
    yield b
    b.close()


def packed(n: int, start: int = 0):
    seq = np.arange(start, start + n, dtype=np.int64)
    return split_messages(encode_events(0, seq, seq + 1, 0, 0), 1)


def fill(backend, queue: str, events: int) -> None:
    producer = backend.producer(queue)
    for start in range(0, events, 10_000):
        producer.send_batch(packed(min(10_000, events - start), start))
    producer.close()


def timed_claims(consumer, batches: int) -> list[float]:
    """Seconds each receive+ack of a 1000-message batch took."""
    timings = []
    for _ in range(batches):
        began = time.perf_counter()
        batch = consumer.receive_batch(1000, 1.0)
        consumer.ack(batch)
        timings.append(time.perf_counter() - began)
        assert len(batch) == 1000
    return timings


def run(backend, *, faults=None, on_progress=None, should_cancel=None, run_id=None, **fields):
    spec = WorkloadSpec(backend=backend.name, **fields)
    runner = Runner(
        spec,
        backend,
        run_id=run_id or uuid.uuid4().hex[:8],
        faults=faults,
        on_progress=on_progress,
        should_cancel=should_cancel,
    )
    return spec, runner.run()


def test_several_consumers_never_receive_the_same_event(sql_backend):
    backend = sql_backend
    spec, result = run(backend, events=40_000, producers=2, consumers=3, batch=200)
    summary = result.summary
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert summary["duplicates"] == 0 and summary["lost"] == 0
    assert summary["received"] == summary["unique"] == spec.events
    assert summary["sum"] == spec.expected_sum


def test_a_consumer_sigkilled_after_claiming_and_before_ack_loses_nothing(sql_backend):
    """The backend's own guarantee, without the runner: the claim is rolled back by the server."""
    backend = sql_backend
    queue = f"{backend.namespace}.crash"
    backend.declare(queue)
    sent = list(packed(1_000))
    producer = backend.producer(queue)
    producer.send_batch(sent)
    producer.close()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the victim: claims a batch, says so, and waits to be killed
        try:
            batch = backend.for_worker().consumer(queue).receive_batch(300, 5.0)
            os.write(ready_w, str(len(batch)).encode())
            time.sleep(30)
        finally:
            os._exit(0)
    try:
        assert os.read(ready_r, 16) == b"300"
        assert backend.depth(queue) == 1_000  # claimed, not gone
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    consumer = backend.consumer(queue)
    received = []
    deadline = time.monotonic() + 10
    while len(received) < len(sent) and time.monotonic() < deadline:
        batch = consumer.receive_batch(400, 0.5)
        received.extend(bytes(b) for b in batch.bodies)
        consumer.ack(batch)
    consumer.close()
    backend.delete(queue)
    assert sorted(received) == sorted(sent)  # every event back, none twice


def test_twenty_runs_leave_nothing_behind(sql_backend):
    backend = sql_backend
    prefix = table_prefix(backend.namespace)
    assert backend.count_objects(prefix) == 0
    probe = f"{backend.namespace}.probe"
    backend.declare(probe)
    assert backend.count_objects(prefix) >= 2  # the prefix does find what a queue creates
    backend.delete(probe)
    for _ in range(20):
        _, result = run(backend, events=300, consumers=1, batch=100)
        assert result.status == RunStatus.SUCCEEDED, result.error
    assert backend.count_objects(prefix) == 0


def test_dequeue_stays_fast_on_a_large_table_after_claims_on_an_empty_one(sql_backend):
    """The cached-plan pitfall: a plan cached while the table was empty must not make later
    claims scan 200k rows each."""
    backend = sql_backend
    queue = f"{backend.namespace}.big"
    backend.declare(queue)
    consumer = backend.consumer(queue)
    try:
        for _ in range(12):  # more than psycopg's prepare threshold, on an empty table
            assert not consumer.receive_batch(1000, 0)
        fill(backend, queue, 200_000)
        after_empty = statistics.median(timed_claims(consumer, 40))
        # the control: a consumer that never saw the table empty, timed under the same load
        # (a full scan of 200k rows per claim would take many times what an index scan takes)
        control = backend.consumer(queue)
        try:
            fresh = statistics.median(timed_claims(control, 40))
        finally:
            control.close()
        assert after_empty < 3 * fresh + 0.005, (
            f"median claim+ack {after_empty * 1000:.1f} ms, {fresh * 1000:.1f} fresh"
        )
        assert backend.depth(queue) == 120_000
    finally:
        consumer.close()
        backend.delete(queue)


def test_an_idle_polling_consumer_backs_off(sql_backend):
    backend = sql_backend
    queue = f"{backend.namespace}.idle"
    backend.declare(queue)
    consumer = backend.consumer(queue)
    claims = 0
    real_claim = consumer._claim

    def counting_claim(limit):
        nonlocal claims
        claims += 1
        return real_claim(limit)

    consumer._claim = counting_claim
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # as the worker does: short timeouts in a loop
            assert not consumer.receive_batch(100, 0.05)
    finally:
        consumer.close()
        backend.delete(queue)
    # polling: 50 ms, 100, 200, 400 ... ; listening: the first claim and a 1 s fallback
    assert claims <= 6, claims


def test_notify_wakes_a_listening_consumer_long_before_its_fallback_poll():
    backend = connected_backend("postgres-notify", fallback_poll_s="5")
    queue = f"{backend.namespace}.wake"
    backend.declare(queue)
    consumer = backend.consumer(queue)
    producer = backend.producer(queue)
    try:
        assert not consumer.receive_batch(10, 0.1)  # drained: the next poll is 5 s away
        producer.send_batch(packed(1))
        began = time.monotonic()
        batch = consumer.receive_batch(10, 3.0)
        assert len(batch) == 1
        assert time.monotonic() - began < 2.5  # half the fallback poll: NOTIFY woke it
        consumer.ack(batch)
    finally:
        producer.close()
        consumer.close()
        backend.delete(queue)
        backend.close()


def test_environment_records_version_durability_and_waiting(sql_backend):
    backend = sql_backend
    env = backend.environment()
    assert env["server_version"]
    if backend.name == "mysql":
        assert "innodb_flush_log_at_trx_commit" in env
        assert env["poll_interval_s"] > 0
    else:
        assert env["synchronous_commit"] and env["fsync"]
        assert env["consumer_wait"] == ("listen" if backend.capabilities.push else "poll")


def test_the_poller_backs_off_and_resets():
    poller = Poller(0.05, 0.4)
    assert poller.due()
    waits = []
    for _ in range(5):
        before = time.monotonic()
        poller.claimed(0, 100)
        waits.append(round(poller.next_at - before, 2))
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.4]
    poller.claimed(100, 100)  # a full batch: ask again at once
    assert poller.due()
    poller.claimed(3, 100)  # a partial one: the queue is drained, wait the base interval
    assert not poller.due() and poller.wait_s == 0.05


def test_sql_table_names_are_safe_and_distinct():
    assert table_name("imq.ab-12") != table_name("imq_ab_12")
    for name in ("imq.ab-12", 'x"; DROP TABLE t; --', "Ünïcode.run", "9lives." + "x" * 200):
        table = table_name(name)
        assert table.replace("_", "").isalnum() and table.isascii() and len(table) <= 57
        assert not table[0].isdigit()
    assert table_name("imqtest-abc.run1").startswith(table_prefix("imqtest-abc"))


def index_entries_read(alias: str, table: str) -> int:
    """Index entries Postgres's scans returned on ``table`` (``pg_stat_user_indexes``): a count
    of work done, which a loaded machine does not change the way it changes timings."""
    with psycopg.connect(backend_url(alias), autocommit=True) as conn:
        (count,) = conn.execute(
            "SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes WHERE relid = to_regclass(%s)", (table,)
        ).fetchone()
    return int(count)


@pytest.mark.parametrize("alias", ["postgres", "postgres-notify"])
def test_claims_skip_deleted_rows_a_long_transaction_holds_in_the_index(alias):
    """Deleted rows stay in the index while any transaction on the server could see them; a
    claim that scanned from the lowest id would walk all of them (quadratic over a run)."""
    backend = connected_backend(alias)
    queue = f"{backend.namespace}.horizon"
    table = table_name(queue)
    backend.declare(queue)
    holder = psycopg.connect(backend_url(alias))
    holder.execute("SELECT txid_current()")  # an open transaction with an id: the horizon stays
    consumer = backend.consumer(queue)
    claims, per_claim = 150, 1000
    try:
        fill(backend, queue, claims * per_claim)
        timed_claims(consumer, claims)
        consumer.close()  # a session's statistics reach the server when it ends
        # each claim reads its ~1000 entries twice (the ordered LIMIT, then the DELETE by id);
        # scanning from the lowest id would read every entry deleted before it: ~11 million
        floor = 2 * claims * per_claim
        read = wait_until(lambda: (n := index_entries_read(alias, table)) >= floor and n, 15, "the claims' statistics")
        assert read < 3 * floor, f"{read:,} index entries read for {claims * per_claim:,} rows claimed"
    finally:
        holder.close()
        consumer.close()
        backend.delete(queue)
        backend.close()


@pytest.mark.parametrize("queue", ["imq.r12-a1b2c3", "imq.r1-000000", "imq.a_b.c"])
def test_a_queue_is_found_again_from_its_table_and_the_objects_named_after_it(queue):
    table = table_name(queue)
    for name in (table, f"{table}_dead", f"{table}_notify"):
        assert queue_of_object(name, "imq") == queue
    assert queue_of_object(table, "imqtest") is None  # another namespace
    assert queue_of_object(table_name("imq_x.r1-000000"), "imq") is None  # a lookalike of another namespace
    assert queue_of_object("imq_unrelated_table", "imq") is None
