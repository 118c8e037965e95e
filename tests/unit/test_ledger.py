import numpy as np
import pytest

from queues.measurement.ledger import DUPLICATED, EXACT, LOST, Ledger, Shares, index_records
from queues.workload.events import encode_events
from queues.workload.spec import WorkloadSpec


def records(producer: int, seqs, base: int, *, value_offset: int = 1):
    seq = np.asarray(seqs, dtype=np.int64)
    return encode_events(producer, seq, seq + base + value_offset, 0, 0)


def test_every_event_once_is_exact_and_sums_to_n_n_plus_1_over_2():
    spec = WorkloadSpec(events=10, producers=2)
    ledger = Ledger(spec)
    (b0, c0), (b1, c1) = spec.producer_shares()
    ledger.add_records(records(0, range(c0), b0))
    ledger.add_records(records(1, range(c1), b1))
    result = ledger.result()
    assert result.verdict == EXACT
    assert result.raw_sum == result.unique_sum == 55 == spec.expected_sum
    assert (result.unique, result.duplicates, result.lost) == (10, 0, 0)


def test_duplicates_and_gaps_are_found_exactly():
    spec = WorkloadSpec(events=8, producers=2)  # producer 0: values 1-4, producer 1: values 5-8
    ledger = Ledger(spec)
    ledger.add_records(records(0, [0, 1, 1, 3], 0))  # seq 1 twice (in one batch), seq 2 missing
    ledger.add_records(records(1, [3, 0, 1], 4))  # out of order, seq 2 missing
    ledger.add_records(records(1, [3], 4))  # seq 3 again, in another batch
    result = ledger.result()
    assert result.unique == 6
    assert result.duplicates == 2
    assert result.lost == 2
    assert sorted(result.lost_examples) == [(0, 2), (1, 2)]
    assert result.raw_sum == (1 + 2 + 2 + 4) + (8 + 5 + 6) + 8
    assert result.unique_sum == 1 + 2 + 4 + 5 + 6 + 8
    assert result.verdict == LOST  # lost outranks duplicated; both counts are reported


def test_duplicates_without_loss_are_duplicated():
    spec = WorkloadSpec(events=3)
    ledger = Ledger(spec)
    assert ledger.add_records(records(0, [0, 1, 2], 0)) == 3
    assert ledger.add_records(records(0, [2], 0)) == 0  # nothing new
    result = ledger.result()
    assert (result.verdict, result.duplicates, result.lost) == (DUPLICATED, 1, 0)
    assert ledger.complete


def test_live_unique_count_matches_the_final_one_with_in_batch_duplicates():
    spec = WorkloadSpec(events=1000)
    ledger = Ledger(spec)
    rng = np.random.default_rng(7)
    for _ in range(20):
        ledger.add_records(records(0, rng.integers(0, 1000, 100), 0))
    assert ledger.unique == ledger.result().unique


def test_records_that_fit_no_event_are_corrupt_not_counted():
    spec = WorkloadSpec(events=4, producers=2)
    shares = Shares.of(spec)
    bad = np.concatenate(
        [
            records(0, [0], 0),
            records(5, [0], 0),  # no such producer
            records(1, [7], 2),  # sequence beyond the producer's share
            records(0, [1], 0, value_offset=100),  # value does not match (producer, seq)
        ]
    )
    flat, raw_sum, corrupt = index_records(bad, shares)
    assert flat.tolist() == [0]
    assert corrupt == 3
    assert raw_sum == int(bad["value"].sum())


def test_the_ledger_holds_one_bit_per_event():
    ledger = Ledger(WorkloadSpec(events=1_000_000))
    assert ledger.nbytes <= 200_000
    assert sum(a.nbytes for a in vars(ledger).values() if isinstance(a, np.ndarray)) <= 200_000


class CountingLedger:
    """The ledger's semantics as it was when it kept one counter per event: the reference."""

    def __init__(self, events: int) -> None:
        self.counts = np.zeros(events, dtype=np.int64)

    def add(self, flat: np.ndarray) -> int:
        before = np.count_nonzero(self.counts)
        np.add.at(self.counts, flat.astype(np.int64), 1)
        return int(np.count_nonzero(self.counts) - before)


def batches_with_every_irregularity(events: int, rng: np.random.Generator):
    """Batches in order, out of order, with copies within and across batches, and gaps: the
    indices a consumer could report, ids a tenth of which never come."""
    kept = np.flatnonzero(rng.random(events) > 0.1)
    for start in range(0, len(kept), 97):
        batch = kept[start : start + 97]
        yield batch  # increasing, with gaps
        yield rng.permutation(batch[:40])  # the same again, out of order: duplicates across batches
        yield np.repeat(batch[-3:], 2)  # copies within one batch
    for index in rng.integers(0, events, size=min(events, 50)):
        yield np.array([index])  # one event a report (a task library's), new or seen already
    yield np.arange(100, 200)  # a contiguous run, partly seen already
    yield np.arange(max(0, events - 5), events)  # the last events, near the bitmap's padding


@pytest.mark.parametrize("events", [1, 7, 8, 9, 1_000, 20_003])
def test_the_bitmap_counts_exactly_as_one_counter_per_event_did(events):
    rng = np.random.default_rng(events)
    ledger, reference = Ledger(WorkloadSpec(events=events)), CountingLedger(events)
    for batch in batches_with_every_irregularity(events, rng):
        flat = batch[batch < events].astype(np.uint32)
        assert ledger.add_indices(flat, int(flat.sum()) + len(flat)) == reference.add(flat)
    result, counts = ledger.result(examples=5), reference.counts
    seen = np.flatnonzero(counts)
    assert (result.received, result.unique) == (int(counts.sum()), len(seen))
    assert result.duplicates == int(counts.sum()) - len(seen)
    assert result.lost == events - len(seen)
    assert result.unique_sum == int((seen + 1).sum())
    assert result.raw_sum == int((counts * np.arange(1, events + 1)).sum())
    assert [seq for _, seq in result.lost_examples] == np.flatnonzero(counts == 0)[:5].tolist()
    assert np.array_equal(ledger.seen(np.arange(events)), counts > 0)
    assert ledger.unique == result.unique


def test_a_ledger_scanned_in_chunks_finds_the_same(monkeypatch):
    import queues.measurement.ledger

    events = 10_000
    ledger = Ledger(WorkloadSpec(events=events, producers=3))
    ledger.add_indices(np.arange(0, events, 3, dtype=np.uint32), 0)
    whole = ledger.result()
    monkeypatch.setattr(queues.measurement.ledger, "SCAN_CHUNK_BYTES", 7)
    assert ledger.result() == whole
    assert whole.unique_sum == int((np.arange(0, events, 3) + 1).sum())
    assert whole.lost_examples[:2] == [(0, 1), (0, 2)]
