"""The summary's pure functions, from synthetic inputs."""

import numpy as np
import pytest

from queues.ledger import Ledger
from queues.metrics import Sample, new_histogram, record_many
from queues.summary import (
    SteadyCounts,
    consume_eps,
    drain_seconds,
    judge,
    loss_judgement,
    offered_eps,
    rate_warnings,
    steady_figures,
    summarise,
)
from queues.workload import WorkloadSpec

S = 1_000_000_000  # ns


def hist(*values_us):
    h = new_histogram()
    record_many(h, np.array(values_us))
    return h


def sample(t_s, backlog, depth=None):
    return Sample(t_s=t_s, produced=0, consumed=0, unique=0, produce_eps=0.0, consume_eps=0.0, depth=depth,
                  backlog=backlog, latency_ms=None)


def test_summarise_gives_the_json_contract():
    spec = WorkloadSpec(events=4, producers=1, consumers=2, batch=10)
    ledger = Ledger(spec)
    ledger.add_indices(np.array([0, 1, 2], dtype=np.uint32), 6)
    ledger.add_indices(np.array([2], dtype=np.uint32), 3)
    s = summarise(
        run_id="r1", spec=spec, status="succeeded", error=None, ledger=ledger.result(), drain_s=0.5,
        latency=hist(1_000, 2_000), latency_from_send=hist(1_000), publish=None, poison=2,
        killed_workers=[{"role": "consumer", "index": 0, "reason": "fault", "reported": 3, "new_after_kill": 0},
                        {"role": "producer", "index": 0, "reason": "hung", "reported": 0, "new_after_kill": 0}],
        recovered_at_end=1, stuck=0,
    )
    assert (s["sum"], s["unique_sum"], s["expected_sum"]) == (9, 6, 10)
    assert (s["received"], s["unique"], s["duplicates"], s["lost"], s["verdict"]) == (4, 3, 1, 1, "lost")
    assert s["throughput_eps"] == 6.0 and s["duration_s"] == 0.5
    assert s["publish_ms"] is None and s["poison"] == 2 and s["killed_consumers"] == 1
    assert [w["role"] for w in s["killed_workers"]] == ["consumer", "producer"]
    assert (s["recovered_at_end"], s["stuck"], s["findings"]) == (1, 0, [])
    assert s["verdict_reasons"] == ["1 event(s) never received", "2 poison message(s): bodies that are not events",
                                    "1 duplicate deliveries"]
    assert s["latency_ms"]["max"] == pytest.approx(2.0, rel=0.01)


def test_drain_is_from_the_start_to_the_last_new_event_and_zero_when_nothing_came():
    assert drain_seconds(t0_ns=1 * S, last_new_ns=3 * S, unique=5) == 2.0
    assert drain_seconds(t0_ns=1 * S, last_new_ns=0, unique=0) == 0.0


def test_offered_rate_over_an_interval_follows_the_schedule_and_stops_with_it():
    spec = WorkloadSpec(rate_eps=1000, duration_s=2, warmup_s=1)  # the schedule runs 3 s
    assert offered_eps(spec, 0.0, 1.0) == 1000.0
    assert offered_eps(spec, 2.5, 3.5) == 500.0
    assert offered_eps(spec, 4.0, 5.0) == 0.0
    assert offered_eps(WorkloadSpec(events=10), 0.0, 1.0) is None


def test_consumption_counts_receipts_in_the_window_shifted_by_the_median_latency():
    receipts = [(int(0.5 * S), 100), (int(1.5 * S), 100), (int(2.9 * S), 100), (int(3.2 * S), 100)]
    window = (1 * S, 3 * S)
    assert consume_eps(receipts=receipts, window_ns=window, median_latency_ms=0, duration_s=2) == 100.0
    # 600 ms later: the receipt at 1.5 s no longer counts, the one at 3.2 s does
    assert consume_eps(receipts=receipts, window_ns=window, median_latency_ms=600, duration_s=2) == 100.0
    assert consume_eps(receipts=receipts, window_ns=window, median_latency_ms=400, duration_s=2) == 150.0
    assert consume_eps(receipts=receipts, window_ns=window, median_latency_ms=2000, duration_s=2) == 50.0


def steady(counts_kw, samples, spec=None):
    spec = spec or WorkloadSpec(rate_eps=100, duration_s=2, warmup_s=1)
    counts = SteadyCounts(**{"t0_ns": 0, "window_ns": (1 * S, 3 * S), "last_new_ns": int(3.1 * S), **counts_kw})
    return steady_figures(spec=spec, counts=counts, samples=samples, latency=hist(1), send_delay=hist(3, 400))


def test_a_run_that_took_everything_offered_kept_up():
    receipts = [(int((1 + (i + 0.5) / 100) * S), 1) for i in range(200)]
    s = steady({"measured_sent": 200, "last_send_ns": int(2.99 * S), "receipts": receipts},
               [sample(1.0, 0), sample(2.0, 3), sample(3.0, 1, depth=2), sample(4.0, 500)])
    assert (s["send_eps"], s["consume_eps"], s["rate_error"]) == (100.0, 100.0, 0.0)
    assert s["kept_up"] is True and s["backlog_at_window_end"] == 2 and s["warnings"] == []
    assert s["drain_s"] == pytest.approx(0.11) and s["send_delay_ms"]["max"] == pytest.approx(0.4, rel=0.01)
    assert (s["rate_eps"], s["duration_window_s"], s["warmup_s"], s["arrival"]) == (100, 2, 1, "uniform")


def test_a_backlog_at_the_window_end_means_it_did_not_keep_up():
    receipts = [(int((1 + (i + 0.5) / 100) * S), 1) for i in range(200)]
    s = steady({"measured_sent": 200, "last_send_ns": int(2.99 * S), "receipts": receipts},
               [sample(3.0, 101)])
    assert s["consume_eps"] == 100.0 and s["kept_up"] is False


def test_producers_below_the_rate_are_warned_about():
    s = steady({"measured_sent": 150, "last_send_ns": int(2.99 * S), "receipts": []}, [])
    assert s["send_eps"] == 75.0 and s["rate_error"] == -0.25 and s["kept_up"] is False
    assert len(s["warnings"]) == 1 and "below the offered 100" in s["warnings"][0]
    assert rate_warnings(spec=WorkloadSpec(rate_eps=100, duration_s=1), send_eps=99.0) == []


def judged(counts: list[int], *, corrupt_values: int = 0, poison: int = 0, stuck: int | None = 0) -> tuple[str, list]:
    """The verdict of a 4-event run whose event ``i`` was received ``counts[i]`` times, plus
    ``corrupt_values`` corrupt records (each carrying the value 2)."""
    ledger = Ledger(WorkloadSpec(events=4))
    for i, n in enumerate(counts):
        for _ in range(n):
            ledger.add_indices(np.array([i], dtype=np.uint32), i + 1)
    if corrupt_values:
        ledger.add_indices(np.array([], dtype=np.uint32), 2 * corrupt_values, corrupt_values)
    return judge(ledger=ledger.result(), poison=poison, stuck=stuck)


def test_exact_means_the_sums_matched_and_nothing_unexplained_arrived():
    assert judged([1, 1, 1, 1]) == ("exact", [])
    assert judged([1, 2, 1, 1]) == ("duplicated", ["1 duplicate deliveries"])
    verdict, reasons = judged([1, 1, 1, 1], corrupt_values=1)
    assert verdict == "corrupt" and reasons == ["1 corrupt record(s): well-formed events that are not the run's"]
    assert judged([1, 1, 1, 1], poison=2)[0] == "corrupt"
    assert judged([1, 2, 1, 1], poison=1)[0] == "corrupt"  # unexplained beats explained duplicates
    verdict, reasons = judged([1, 0, 1, 1], poison=1, stuck=3)
    assert verdict == "lost" and reasons[0] == "1 event(s) never received; 3 message(s) still in the queue after the final drain"


def test_a_loss_fails_an_at_least_once_run_and_is_a_finding_of_an_at_most_once_one():
    assert loss_judgement(lost=0, at_least_once=True, backend="postgres") == (None, None)
    error, finding = loss_judgement(lost=5, at_least_once=True, backend="postgres")
    assert error == "5 event(s) lost on an at-least-once backend (postgres)" and finding is None
    error, finding = loss_judgement(lost=5, at_least_once=False, backend="memory-mp")
    assert error is None and finding.startswith("5 event(s) lost: memory-mp is at-most-once")
