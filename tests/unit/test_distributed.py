"""The pure parts of distributed runs (``queues.distributed``): the plan, the clock shifts, the
report codec, and the consumer's latency correction with negative latencies counted."""

from __future__ import annotations

import time

import numpy as np
import pytest

from queues.distributed import coordinator
from queues.distributed.plan import Share, latency_shifts, plan_shares
from queues.distributed.reports import ShareReport, on_clock
from queues.errors import InvalidSpec
from queues.measurement.histograms import encode, merge_encoded, new_histogram
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


class _SlowToStopHosts:
    """A ``HostLink`` whose host sends its final report only ``final_after_s`` after the stop,
    as a host busy stopping and reaping its workers on a loaded machine does."""

    def __init__(self, final_after_s: float, e2e: bytes) -> None:
        self.final_after_s, self.e2e = final_after_s, e2e
        self.stopped_at: float | None = None
        self.sent_final = False

    def stop(self) -> None:
        self.stopped_at = time.monotonic()

    def reports(self) -> list[tuple[str, bytes]]:
        due = self.stopped_at is not None and time.monotonic() - self.stopped_at >= self.final_after_s
        if not due or self.sent_final:
            return []
        self.sent_final = True
        return [("b", ShareReport(9, [], {}, self.e2e, final=True).encode())]


def test_the_stop_waits_for_a_slow_hosts_final_report_with_its_last_histograms(monkeypatch):
    monkeypatch.setattr(coordinator, "HOST_LOST_AFTER_S", 0.2)
    histogram = new_histogram()
    histogram.record_value(1_000)
    link = _SlowToStopHosts(final_after_s=0.6, e2e=encode(histogram))
    supervisor = coordinator.RemoteSupervisor(
        link=link,  # type: ignore[arg-type]
        shares={"b": Share("b", producers=(), consumers=(0,))},
        context=None,  # type: ignore[arg-type]  # read only for producers' sent counts: none here
        on_message=lambda message: None,
        stop_timeout_s=5.0,
        join_timeout_s=5.0,
    )
    supervisor.last_report = {"b": time.monotonic()}  # reporting when the stop begins
    supervisor.stop()
    assert "b" in supervisor.final and supervisor.host_e2e["b"] == link.e2e
