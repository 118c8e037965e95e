"""The runner's accounting alone, fed synthetic worker messages."""

import numpy as np
import pytest

from queues.measurement.histograms import encode, new_histogram, record_many
from queues.run.accounting import Accounting
from queues.workers.reports import BatchReport, Done, Histograms, Ready, WorkerFailed
from queues.workload.spec import WorkloadSpec


def flat(*indices):
    return np.array(indices, dtype=np.uint32).tobytes()


def hist(*values_us):
    h = new_histogram()
    record_many(h, np.array(values_us))
    return encode(h)


def test_batch_reports_fill_the_ledger_with_duplicates_and_poison():
    acc = Accounting(WorkloadSpec(events=5))
    acc.apply(BatchReport(0, flat(0, 1, 2), 1 + 2 + 3, 0, 1, 1_000))
    acc.apply(BatchReport(1, flat(2, 3), 3 + 4, 1, 0, 3_000))  # event 2 again, and one corrupt record
    ledger = acc.ledger.result()
    assert (ledger.received, ledger.unique, ledger.duplicates, ledger.lost) == (5, 4, 1, 1)
    assert ledger.raw_sum == 13 and ledger.corrupt == 1 and ledger.verdict == "lost"
    assert acc.tally.poison == 1 and acc.tally.last_new_ns == 3_000
    assert acc.tally.unique_by_window_end == 0  # a steady run's figure only


def test_a_report_of_only_duplicates_does_not_move_the_last_new_event():
    acc = Accounting(WorkloadSpec(events=3))
    acc.apply(BatchReport(0, flat(0, 1), 3, 0, 0, 1_000))
    acc.apply(BatchReport(0, flat(0), 1, 0, 0, 9_000))
    assert acc.tally.last_new_ns == 1_000 and acc.ledger.received == 3


def test_histograms_merge_into_the_run_totals_and_the_interval():
    acc = Accounting(WorkloadSpec(events=10))
    acc.apply(Histograms("consumer", 0, {"e2e": hist(1_000, 2_000), "from_send": hist(500)}))
    acc.apply(BatchReport(0, flat(0), 1, 0, 0, 1, {"e2e": hist(3_000), "e2e_warmup": hist(50_000)}))
    acc.apply(Histograms("producer", 0, {"publish": hist(10), "send_delay_warmup": hist(7)}))
    assert acc.totals["e2e"].get_total_count() == 3  # warm-up is left out of the summary
    assert acc.totals["publish"].get_total_count() == 1 and acc.totals["from_send"].get_total_count() == 1
    sample = acc.take_sample(elapsed_s=1.0, produced=4, depth=None)
    assert sample.latency_ms["max"] == pytest.approx(50.0, rel=0.01)  # the interval includes warm-up
    assert sample.send_delay_p99_ms == pytest.approx(0.007, rel=0.01)


def test_producer_done_adds_its_measured_sends_and_last_send():
    acc = Accounting(WorkloadSpec(events=10))
    acc.apply(Done("producer", 0, 4, 5_000))
    acc.apply(Done("producer", 1, 6, 4_000))
    acc.apply(Done("consumer", 0))
    acc.apply(Ready("consumer", 1, 42))
    acc.apply(WorkerFailed("consumer", 1, "boom"))  # supervision's business: nothing counted
    assert (acc.tally.measured_sent, acc.tally.last_send_ns) == (10, 5_000)
    assert acc.ledger.received == 0


def test_samples_give_interval_rates_and_reset_the_interval():
    acc = Accounting(WorkloadSpec(rate_eps=100, duration_s=2, warmup_s=0))
    acc.apply(BatchReport(0, flat(*range(50)), sum(range(1, 51)), 0, 0, 10, {"e2e": hist(1_000)}))
    first = acc.take_sample(elapsed_s=0.5, produced=60, depth=7)
    acc.apply(BatchReport(0, flat(*range(50, 100)), sum(range(51, 101)), 0, 0, 20))
    second = acc.take_sample(elapsed_s=1.0, produced=100, depth=0)
    # backlog: events due by the schedule (one every 10 ms, from 0) minus events received
    assert (first.produce_eps, first.consume_eps, first.due, first.backlog, first.depth) == (120.0, 100.0, 51, 1, 7)
    assert (second.produce_eps, second.consume_eps, second.due, second.backlog) == (80.0, 100.0, 101, 1)
    assert first.offered_eps == second.offered_eps == 100.0
    assert first.latency_ms is not None and second.latency_ms is None  # nothing recorded since
    assert acc.samples == [first, second]
    assert acc.tally.unique_by_window_end == 100  # no window end set: every new event counts


def test_the_backlog_is_never_negative_and_counts_duplicates_once():
    acc = Accounting(WorkloadSpec(rate_eps=100, duration_s=2, warmup_s=0))
    acc.apply(BatchReport(0, flat(*range(5)), 15, 0, 0, 10))
    acc.apply(BatchReport(0, flat(*range(5)), 15, 0, 0, 11))  # redelivered
    # received a little before the runner's clock says they were due (another clock): 0, not -1
    assert acc.take_sample(elapsed_s=0.03, produced=5, depth=None, due=4).backlog == 0
    assert acc.take_sample(elapsed_s=0.1, produced=5, depth=None).backlog == 11 - 5
    assert acc.tally.unique_by_window_end == 5  # the redelivered copies were not new


def test_a_burst_offers_every_event_at_once():
    acc = Accounting(WorkloadSpec(events=10))
    acc.apply(BatchReport(0, flat(0, 1, 2), 6, 0, 0, 10))
    assert acc.due_by(0) == 10 and acc.take_sample(elapsed_s=0.1, produced=10, depth=0).backlog == 7


def test_steady_counts_take_the_offer_from_the_realised_schedule_and_the_window_tallies():
    spec = WorkloadSpec(rate_eps=100, duration_s=2, warmup_s=1)  # events every 10 ms, window [1 s, 3 s)
    acc = Accounting(spec)
    acc.window_end_ns = 3 * 10**9  # set by the runner at the start signal
    acc.apply(BatchReport(0, flat(*range(100)), 0, 0, 0, int(0.99e9), None, 0))
    acc.apply(BatchReport(0, flat(*range(100, 250)), 0, 0, 0, int(2.5e9), None, 150))
    acc.apply(BatchReport(0, flat(*range(250, 300)), 0, 0, 0, int(3.05e9), None, 50))
    acc.apply(Done("producer", 0, 200, int(3.0e9), int(2.995e9)))
    counts = acc.steady_counts(t0_ns=0, window_ns=(10**9, 3 * 10**9), sent_total=300)
    assert (counts.offered, counts.due_at_window_end, counts.unique_by_window_end) == (200, 300, 250)
    assert (counts.window_received, counts.last_window_receipt_ns) == (200, int(3.05e9))
    assert (counts.measured_sent, counts.last_window_send_ns, counts.sent_total) == (200, int(2.995e9), 300)
