"""Distributed runs end to end: a coordinator cluster and three load hosts, each a real
``qcluster`` process of its own with its own name, on one SQLite database and a real Redis."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from queues.distributed.reports import union_histogram
from queues.measurement.histograms import percentiles_ms
from tests.support.stack import FAST, define, launch, wait_for_run
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.timeout(180), pytest.mark.stack(web=False, env=FAST, redis=True, hosts="abc")]


def test_a_run_split_over_three_hosts_is_exact_and_its_histogram_is_the_hosts_union(stack):
    placement = {"producers": {"a": 2}, "consumers": {"b": 1, "c": 1}}
    define(stack, "split-3", backend="redis-list", events=20_000, producers=2, consumers=2, placement=placement)
    run_id = launch(stack, "split-3")
    row = wait_for_run(stack, run_id, timeout_s=90)
    assert row["status"] == "succeeded" and row["verdict"] == "exact", (row["error"], stack.log("host-b")[-2000:])
    summary = json.loads(row["summary"])
    assert summary["sum"] == summary["expected_sum"] == 20_000 * 20_001 // 2
    hosts = summary["hosts"]
    assert set(hosts) == {"a", "b", "c"} and hosts["a"]["producers"] == [0, 1] and hosts["c"]["consumers"] == [1]
    # the merged latency is the union of the consumers' hosts' histograms, not an average
    union = union_histogram([hosts[h]["e2e_histogram"].encode() for h in ("b", "c")])
    assert union.get_total_count() == summary["received"] == 20_000
    assert percentiles_ms(union) == summary["latency_ms"]
    assert summary["negative_latencies"]["count"] == 0  # one machine: the offsets are all ~0
    samples = stack.query('SELECT COUNT(*), MAX("unique") FROM experiments_sample WHERE run_id = ?', run_id)[0]
    assert samples[0] >= 1 and samples[1] == 20_000  # samples like a single machine's


def test_a_missing_host_fails_the_run_with_its_name(stack):
    define(
        stack,
        "missing-host",
        backend="redis-list",
        events=1_000,
        producers=1,
        consumers=1,
        placement={"producers": {"a": 1}, "consumers": {"nowhere": 1}},
    )
    row = wait_for_run(stack, launch(stack, "missing-host"), timeout_s=60)
    assert row["status"] == "failed" and "nowhere (never seen)" in row["error"], row["error"]


def test_a_host_whose_clock_is_off_is_measured_and_its_events_latencies_corrected(stack):
    """Host s's clock reads 2.5 s ahead, its share's workers' event timestamps too (the test-only
    ``IMQ_CLOCK_SKEW_S``): the offsets show it, and the consumers on b and c correct it away."""
    skew_s = 2.5
    stack.start_host("s", IMQ_CLOCK_SKEW_S=str(skew_s))
    try:
        wait_until(
            lambda: stack.query(
                "SELECT clock_offset_s FROM experiments_host WHERE name = 's' AND clock_offset_s IS NOT NULL"
            ),
            60,
            "host s to answer",
            interval_s=0.1,
        )
        define(
            stack,
            "skewed-producer",
            backend="redis-list",
            rate_eps=1_000.0,
            duration_s=2.0,
            warmup_s=0.0,
            producers=1,
            consumers=2,
            placement={"producers": {"s": 1}, "consumers": {"b": 1, "c": 1}},
        )
        run_id = launch(stack, "skewed-producer")
        row = wait_for_run(stack, run_id, timeout_s=120)
        assert row["status"] == "succeeded" and row["verdict"] == "exact", (row["error"], stack.log("host-s")[-2000:])
    finally:
        host = stack.procs.pop("host-s")
        host.send_signal(signal.SIGTERM)
        host.wait(timeout=20)
    summary = json.loads(row["summary"])
    shares = {
        host: (offset, uncertainty, json.loads(shifts))
        for host, offset, uncertainty, shifts in stack.query(
            "SELECT host, clock_offset_s, clock_uncertainty_s, latency_shifts FROM experiments_hostshare "
            "WHERE run_id = ?",
            run_id,
        )
    }
    # measured: s is 2.5 s ahead (its offset to the database is -2.5 s), b and c are not
    for host, true_offset_s in (("s", -skew_s), ("b", 0.0), ("c", 0.0)):
        offset_s, uncertainty_s, _ = shares[host]
        assert abs(offset_s - true_offset_s) <= uncertainty_s, (host, offset_s, uncertainty_s)
        assert summary["hosts"][host]["clock_offset_ms"] == pytest.approx(offset_s * 1000, abs=0.001)
    # the correction b's and c's consumers added to the events of s's producer (index 0): +2.5 s
    for host in ("b", "c"):
        shift_s = shares[host][2][0] / 1e9
        assert abs(shift_s - skew_s) <= shares["s"][1] + shares[host][1], (host, shift_s)
    # corrected: the latencies of one machine, far below the skew. Those that still came out
    # negative are off by no more than the two offsets' uncertainties: SQLite's clock has
    # milliseconds (about +-0.5 ms each) and these latencies are about 0.5 ms, so some are
    # (they were 140 and 628 of 2,000, the largest -0.17 and -0.37 ms, in two runs here)
    latency = summary["latency_ms"]
    assert summary["received"] == 2_000 and latency["p99"] < 1000, latency
    negative = summary["negative_latencies"]
    bound_ms = (shares["s"][1] + max(shares["b"][1], shares["c"][1])) * 1000
    assert negative["count"] == 0 or negative["max_ms"] <= bound_ms, (negative, bound_ms)
    # uncorrected, the consumers' raw figure (received - sent) of every event was its latency
    # minus the shift: below -1.5 s, so every one of them would have come out negative
    assert latency["max"] - shares["b"][2][0] / 1e6 < -1500, latency


def test_a_host_killed_mid_run_fails_the_run_cleanly_within_seconds(stack):
    define(
        stack,
        "kill-host",
        backend="redis-list",
        rate_eps=1_000.0,
        duration_s=60.0,
        warmup_s=0.0,
        producers=1,
        consumers=2,
        placement={"producers": {"a": 1}, "consumers": {"b": 1, "c": 1}},
    )
    run_id = launch(stack, "kill-host")
    wait_until(
        lambda: stack.query("SELECT COUNT(*) FROM experiments_sample WHERE run_id = ?", run_id)[0][0] >= 2,
        120,
        "the run's samples",
        interval_s=0.1,
    )
    killed = stack.procs.pop("host-c")
    os.killpg(killed.pid, signal.SIGKILL)  # the host's whole cluster, its share's workers included
    killed.wait(timeout=10)
    at = time.monotonic()
    row = wait_for_run(stack, run_id, timeout_s=20, what="to fail after the host was killed")
    failed_after_s = time.monotonic() - at
    assert row["status"] == "failed" and "load host c lost" in row["error"], row["error"]
    assert "lost of" in row["error"]  # what the ledger says after the final drain
    assert failed_after_s < 3.0 + 2.0, failed_after_s  # detection within 3 s, then the drain and the end
    # the surviving hosts were stopped: their shares ended and they are free again
    wait_until(
        lambda: stack.query("SELECT SUM(busy) FROM experiments_host WHERE name IN ('a', 'b')")[0][0] == 0,
        20,
        "hosts a and b to be free",
    )
    statuses = dict(stack.query("SELECT host, status FROM experiments_hostshare WHERE run_id = ?", run_id))
    assert statuses["a"] == statuses["b"] == "done", statuses
