"""The NTP-style offset arithmetic (``queues.measurement.clocks``), on synthetic clocks."""

from __future__ import annotations

import pytest

from queues.measurement.clocks import ClockOffset, from_exchange, measure


def test_one_exchange_gives_the_midpoint_offset_and_half_the_round_trip():
    found = from_exchange(100.0, 95.004, 100.010, resolution_s=0.001)  # truncated to the ms: 95.0045 on average
    assert found.offset_s == pytest.approx(-5.0005)
    assert found.uncertainty_s == pytest.approx(0.0055)  # 10 ms round trip, 1 ms resolution
    assert found.contains(-5.0) and not found.contains(-5.007)


def test_the_tightest_exchange_wins_and_a_slow_reply_never_moves_the_truth_out():
    true_offset = 2.5
    now = [1000.0]  # true time; the local clock reads it as it is
    delays = iter([0.050, 0.004, 0.020, 0.002, 0.3])  # each exchange's round trip

    def local():
        return now[0]

    def reference():  # reads its clock at some point of the round trip, not always the middle
        delay = next(delays)
        now[0] += delay / 4
        value = now[0] + true_offset
        now[0] += 3 * delay / 4
        return value

    found = measure(local, reference, exchanges=5)
    assert isinstance(found, ClockOffset) and found.contains(true_offset)
    assert found.uncertainty_s == pytest.approx(0.001)  # the exchange with the shortest round trip


def test_a_clock_going_backwards_is_refused():
    with pytest.raises(ValueError, match="backwards"):
        from_exchange(10.0, 10.0, 9.0)
