"""The pure parts of distributed runs (``queues.distributed``): the plan, the clock shifts, the
report codec, and the consumer's latency correction with negative latencies counted."""

from __future__ import annotations

import numpy as np
import pytest

from queues.distributed.plan import Share, latency_shifts, plan_shares
from queues.distributed.reports import ShareReport, on_clock
from queues.errors import InvalidSpec
from queues.measurement.histograms import merge_encoded, new_histogram
from queues.workers.counting import HistBuffer, record_latency
from queues.workers.reports import BatchReport, Done, Histograms
from queues.workload.events import decode_bodies, encode_events, split_messages
from queues.workload.spec import WorkloadSpec


def test_placement_hands_out_indices_in_order_and_must_add_up():
    spec = WorkloadSpec(backend="redis-list", events=100, producers=2, consumers=3)
    shares = plan_shares(spec, {"producers": {"a": 2}, "consumers": {"b": 1, "a": 2}})
    assert shares == {"a": Share("a", (0, 1), (1, 2)), "b": Share("b", (), (0,))}
    with pytest.raises(InvalidSpec, match="puts 2 consumers on hosts, the spec has 3"):
        plan_shares(spec, {"producers": {"a": 2}, "consumers": {"b": 2}})


def test_latency_shift_is_the_consumers_offset_minus_the_producers():
    shares = {"a": Share("a", (0,), ()), "b": Share("b", (1,), (0,))}
    shifts = latency_shifts(shares, {"a": 0.002, "b": -0.001}, producers=2)
    assert shifts["b"] == [-3_000_000, 0] and shifts["a"] == [0, 3_000_000]


def test_a_report_round_trips_and_its_times_move_onto_the_coordinators_clock():
    report = ShareReport(
        3,
        [
            BatchReport(1, b"\x01\x00\x00\x00", 2, 0, 0, 1_000, {"e2e": b"HIST"}, 1),
            Done("producer", 0, 5, 2_000, 1_500),
            Histograms("consumer", 1, {"e2e": b"X"}),
        ],
        {0: 5},
        b"E2E",
        final=True,
        error=None,
    )
    back = ShareReport.decode(report.encode())
    assert back == report
    assert on_clock(back.messages[0], 10).received_ns == 1_010
    done = on_clock(back.messages[1], 10)
    assert (done.last_send_ns, done.last_window_send_ns) == (2_010, 1_510)


def test_a_corrected_latency_below_zero_is_counted_not_dropped():
    seq = np.arange(4, dtype=np.int64)
    intended = np.full(4, 10_000_000, dtype=np.int64)
    records, _ = decode_bodies(split_messages(encode_events(0, seq, seq + 1, intended, intended), 4))
    hists = HistBuffer("e2e", "e2e_warmup", "from_send", "e2e_negative")
    # received 2 ms after the intended time on the consumer's clock; its clock is 5 ms ahead
    record_latency(hists, 12_000_000, records, 0, False, shift=np.array([-5_000_000], dtype=np.int64))
    flushed = {name: h for name, h in ((n, new_histogram()) for n in ("e2e", "e2e_negative"))}
    hists.last_flush = 0
    for name, blob in hists.flush().items():
        if name in flushed:
            merge_encoded(flushed[name], blob)
    assert flushed["e2e"].get_total_count() == 4 and flushed["e2e"].get_max_value() == 1  # clipped to 1 us
    assert flushed["e2e_negative"].get_total_count() == 4
    assert flushed["e2e_negative"].get_max_value() == pytest.approx(3_000, rel=1e-3)  # 3 ms below zero
