"""The summary's pure functions, from synthetic inputs."""

import numpy as np
import pytest

from queues.measurement.histograms import IntervalSample, new_histogram, record_many
from queues.measurement.ledger import Ledger
from queues.measurement.summary import (
    SteadyCounts,
    drain_seconds,
    judge,
    loss_judgement,
    offered_eps,
    rate_warnings,
    send_delay_bound_ms,
    steady_figures,
    summarise,
    worst_interval_send_ratio,
)
from queues.workload.spec import WorkloadSpec

S = 1_000_000_000  # ns


def hist(*values_us):
    h = new_histogram()
    record_many(h, np.array(values_us))
    return h


def test_summarise_gives_the_json_contract():
    spec = WorkloadSpec(events=4, producers=1, consumers=2, batch=10)
    ledger = Ledger(spec)
    ledger.add_indices(np.array([0, 1, 2], dtype=np.uint32), 6)
    ledger.add_indices(np.array([2], dtype=np.uint32), 3)
    s = summarise(
        run_id="r1",
        spec=spec,
        status="succeeded",
        error=None,
        ledger=ledger.result(),
        drain_s=0.5,
        latency=hist(1_000, 2_000),
        latency_from_send=hist(1_000),
        publish=None,
        poison=2,
        killed_workers=[
            {"role": "consumer", "index": 0, "reason": "fault", "reported": 3, "new_after_kill": 0},
            {"role": "producer", "index": 0, "reason": "hung", "reported": 0, "new_after_kill": 0},
        ],
        recovered_at_end=1,
        stuck=0,
    )
    assert (s["sum"], s["unique_sum"], s["expected_sum"]) == (9, 6, 10)
    assert (s["received"], s["unique"], s["duplicates"], s["lost"], s["verdict"]) == (4, 3, 1, 1, "lost")
    assert s["throughput_eps"] == 6.0 and s["duration_s"] == 0.5
    assert s["publish_ms"] is None and s["poison"] == 2 and s["killed_consumers"] == 1
    assert [w["role"] for w in s["killed_workers"]] == ["consumer", "producer"]
    assert (s["recovered_at_end"], s["stuck"], s["findings"]) == (1, 0, [])
    assert s["verdict_reasons"] == [
        "1 event(s) never received",
        "2 poison message(s): bodies that are not events",
        "1 duplicate deliveries",
    ]
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


def steady(counts_kw, samples=(), spec=None, *, latency=None, send_delay=None, publish=None):
    """The steady figures of a run offering 100 events/s for 2 s after a 1 s warm-up, whose
    producers and consumers were on time unless ``counts_kw`` says otherwise."""
    spec = spec or WorkloadSpec(rate_eps=100, duration_s=2, warmup_s=1)
    counts = SteadyCounts(
        **{
            "t0_ns": 0,
            "window_ns": (1 * S, 3 * S),
            "offered": 200,
            "due_at_window_end": 300,
            "unique_by_window_end": 299,
            "measured_sent": 200,
            "last_window_send_ns": int(2.991 * S),
            "window_received": 200,
            "last_window_receipt_ns": int(2.995 * S),
            "last_send_ns": int(2.991 * S),
            "last_new_ns": int(3.1 * S),
            "sent_total": 300,
            **counts_kw,
        }
    )
    return steady_figures(
        spec=spec,
        counts=counts,
        samples=list(samples),
        latency=latency or hist(1_000),
        send_delay=send_delay or hist(3, 400),
        publish=publish,
    )


def test_a_run_that_took_everything_offered_kept_up():
    s = steady({})
    assert (s["send_eps"], s["consume_eps"], s["rate_error"], s["offered_in_window"]) == (100.0, 100.0, 0.0, 200)
    assert s["kept_up"] is True and s["backlog_at_window_end"] == 1 and s["warnings"] == []
    assert s["drain_s"] == pytest.approx(0.109) and s["send_delay_ms"]["max"] == pytest.approx(0.4, rel=0.01)
    assert (s["rate_eps"], s["duration_window_s"], s["warmup_s"], s["arrival"]) == (100, 2, 1, "uniform")


def test_keeping_up_does_not_depend_on_a_batch_at_the_window_edge():
    # the consumers take 50 events a batch and the last batch of the window lands after its
    # end: every event of the window still arrived, well within a second
    s = steady({"unique_by_window_end": 250, "last_window_receipt_ns": int(3.08 * S)}, latency=hist(5_000, 80_000))
    assert s["kept_up"] is True and s["backlog_at_window_end"] == 50


def test_a_consumer_more_than_a_second_behind_did_not_keep_up():
    s = steady({"unique_by_window_end": 150, "last_window_receipt_ns": int(4.5 * S)}, latency=hist(*[1_500_000] * 10))
    assert s["kept_up"] is False and s["backlog_at_window_end"] == 150
    assert s["consume_eps"] == pytest.approx(200 / 3.5, abs=0.1) and s["consume_eps"] <= s["send_eps"]


def test_events_of_the_window_never_received_mean_it_did_not_keep_up():
    assert steady({"window_received": 190})["kept_up"] is False


def test_the_backlog_counts_events_due_and_not_yet_sent():
    # the producers were 150 events behind at the window's end: no less a backlog than a queue's
    s = steady({"measured_sent": 200, "unique_by_window_end": 140, "last_window_send_ns": int(4.5 * S)})
    assert s["backlog_at_window_end"] == 160 and s["kept_up"] is False


def test_send_and_consume_rates_share_one_span_so_consumption_never_exceeds_sending():
    s = steady({"last_window_send_ns": int(3.5 * S), "last_window_receipt_ns": int(3.2 * S), "measured_sent": 200})
    assert s["send_eps"] == s["consume_eps"] == 80.0
    s = steady({"last_window_send_ns": int(3.5 * S), "last_window_receipt_ns": int(4 * S)})
    assert s["consume_eps"] == pytest.approx(66.7) and s["send_eps"] == 80.0


def test_the_rate_is_judged_against_what_the_realised_schedule_offered():
    # a Poisson schedule put 190 events in the window instead of 200: sending all of them on
    # time is not 5% low
    s = steady(
        {"offered": 190, "measured_sent": 190, "window_received": 190},
        spec=WorkloadSpec(rate_eps=100, duration_s=2, warmup_s=1, arrival="poisson"),
    )
    assert s["send_eps"] == 95.0 and s["rate_error"] == 0.0 and s["warnings"] == [] and s["kept_up"] is True


def test_producers_below_the_offer_are_warned_about_naming_the_engine_when_sends_are_cheap():
    publish = hist(*[10] * 150)  # 150 calls of 10 us: 1.5 ms of 3 s in the backend
    s = steady({"measured_sent": 150, "last_window_send_ns": int(2.99 * S)}, publish=publish)
    assert s["send_eps"] == 75.0 and s["rate_error"] == -0.25
    assert len(s["warnings"]) == 1 and "below the 100 the schedule offered" in s["warnings"][0]
    assert "the engine's producer loop" in s["warnings"][0] and "0% of their time" in s["warnings"][0]
    assert rate_warnings(spec=WorkloadSpec(rate_eps=100, duration_s=1), send_eps=99.0, offered_eps=100.0) == []


def test_producers_below_the_offer_are_warned_about_naming_the_backend_when_sends_take_the_time():
    publish = hist(*[15_000] * 150)  # 150 calls of 15 ms: 2.25 s of 3 s in the backend
    s = steady({"measured_sent": 150, "last_window_send_ns": int(2.99 * S), "sent_total": 150}, publish=publish)
    assert "the backend's send calls are the limit" in s["warnings"][0]
    assert "75% of their time" in s["warnings"][0] and "15.0" in s["warnings"][0]


def due_sample(t_s, produced, due):
    return IntervalSample(
        t_s=t_s,
        produced=produced,
        consumed=0,
        unique=0,
        produce_eps=0.0,
        consume_eps=0.0,
        depth=None,
        backlog=max(0, due - produced),
        latency_ms=None,
        due=due,
    )


def test_a_stalled_producer_is_flagged_even_when_it_caught_up():
    samples = [due_sample(1.0, 100, 100), due_sample(2.0, 105, 200), due_sample(3.0, 300, 300)]
    s = steady({}, samples, send_delay=hist(*[900_000] * 50, *[1_000] * 150))
    assert s["send_eps"] == 100.0 and s["rate_error"] == 0.0  # the rate alone hides it
    assert s["worst_interval_send_ratio"] == 0.05
    assert len(s["warnings"]) == 1 and "did not follow the schedule" in s["warnings"][0]
    assert "send delay p99 9" in s["warnings"][0] and "5% of what was due" in s["warnings"][0]


def test_the_send_delay_bound_is_100_ms_or_ten_inter_arrival_times():
    assert send_delay_bound_ms(WorkloadSpec(rate_eps=1000, duration_s=1)) == 100.0
    assert send_delay_bound_ms(WorkloadSpec(rate_eps=20, duration_s=1, producers=2)) == 1000.0
    assert steady({}, send_delay=hist(*[90_000] * 10))["warnings"] == []


def test_the_worst_interval_covers_the_window_only_and_skips_intervals_with_nothing_due():
    samples = [
        due_sample(0.5, 0, 50),
        due_sample(1.5, 150, 150),
        due_sample(2.5, 240, 250),
        due_sample(3.5, 300, 300),
        due_sample(4.0, 300, 300),
    ]
    # the first interval ends before the window; the last has nothing due
    assert worst_interval_send_ratio(samples, begin_s=1.0, end_s=3.0) == 0.9
    assert worst_interval_send_ratio([], begin_s=1.0, end_s=3.0) is None


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
    assert (
        verdict == "lost"
        and reasons[0] == "1 event(s) never received; 3 message(s) still in the queue after the final drain"
    )


def test_a_loss_fails_an_at_least_once_run_and_is_a_finding_of_an_at_most_once_one():
    assert loss_judgement(lost=0, at_least_once=True, backend="postgres") == (None, None)
    error, finding = loss_judgement(lost=5, at_least_once=True, backend="postgres")
    assert error == "5 event(s) lost on an at-least-once backend (postgres)" and finding is None
    error, finding = loss_judgement(lost=5, at_least_once=False, backend="memory-mp")
    assert error is None and finding.startswith("5 event(s) lost: memory-mp is at-most-once")
