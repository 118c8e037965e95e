"""``count_one`` (a task library's one-event message, read without numpy) reports exactly what
``count_bodies`` reports for the same body: the ledger's fields and every latency histogram."""

from __future__ import annotations

import time

import numpy as np
import pytest

from queues.measurement.ledger import Shares
from queues.workers.counting import HistBuffer, count_bodies, count_one
from queues.workload.events import encode_events, split_messages
from queues.workload.spec import WorkloadSpec

NAMES = ("e2e", "e2e_warmup", "from_send", "e2e_negative")
SPEC = WorkloadSpec(backend="memory", events=1_000, producers=2)


def body(producer: int, seq: int, value: int, intended_ns: int, events: int = 1) -> bytes:
    seqs = np.arange(seq, seq + events, dtype=np.int64)
    records = encode_events(producer, seqs, seqs * 0 + value, intended_ns, intended_ns + 2_000_000)
    return bytes(split_messages(records, events)[0])


def latencies(hists: HistBuffer) -> dict[str, list[int]]:
    """What a flush would record, by name, before encoding (the order does not matter)."""
    out = {name: sorted(int(v) for part in hists.parts[name] for v in part) for name in NAMES}
    for name, values in hists.singles.items():
        out[name] = sorted(out[name] + values)
    return out


NOW = time.time_ns()
CASES = {
    "an event": body(0, 41, 42, NOW - 5_000_000),
    "the second producer's": body(1, 9, 501, NOW - 5_000_000),  # its share starts at 500
    "before the window (warm-up)": body(0, 41, 42, NOW - 10**12),
    "after the window": body(0, 41, 42, NOW + 10**12),
    "a wrong value (corrupt)": body(0, 41, 7, NOW),
    "an unknown producer": body(5, 1, 2, NOW),
    "a sequence past the share": body(0, 700, 701, NOW),
    "several events": body(0, 10, 11, NOW, events=3),
    "poison": b"not an event at all, 32 bytes..",
    "a bad magic number": b"\x00" * 32,
}


@pytest.mark.parametrize("steady", [False, True])
@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_count_one_reports_what_count_bodies_reports(case, steady, shifted):
    shares = Shares.of(SPEC)
    window = (NOW - 60 * 10**9, NOW + 60 * 10**9)
    # a shift larger than the latency makes it negative: recorded in e2e_negative by both
    shift = np.array([-(10**10), 0], dtype=np.int64) if shifted else None
    one, many = HistBuffer(*NAMES), HistBuffer(*NAMES)

    flat, raw_sum, corrupt, poison, received_ns, window_events = count_one(
        CASES[case], shares, one, window, steady, shift
    )
    expected = count_bodies([CASES[case]], shares, many, window, steady, shift)

    assert np.frombuffer(flat, dtype=np.uint32).tolist() == expected[1].tolist()
    assert (raw_sum, corrupt, poison, window_events) == (expected[2], expected[3], len(expected[0]), expected[5])
    assert received_ns >= expected[4] - 10**9  # its own clock reading, taken just before
    got, want = latencies(one), latencies(many)
    # the receipt times differ by the microseconds between the two calls: compare within 1 s
    for name in NAMES:
        assert len(got[name]) == len(want[name]), (name, got, want)
        assert all(abs(a - b) < 10**6 for a, b in zip(got[name], want[name], strict=True)), (name, got, want)


def test_count_one_sends_single_latencies_through_the_flush():
    hists = HistBuffer(*NAMES)
    count_one(CASES["an event"], Shares.of(SPEC), hists, (0, 2**62), False)
    encoded = hists.flush()
    assert set(encoded) == {"e2e", "from_send"} and not any(hists.singles.values())
