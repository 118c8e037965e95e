import numpy as np

from queues.events import encode_events
from queues.ledger import DUPLICATED, EXACT, LOST, Ledger, Shares, index_records
from queues.workload import WorkloadSpec


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
    bad = np.concatenate([
        records(0, [0], 0),
        records(5, [0], 0),  # no such producer
        records(1, [7], 2),  # sequence beyond the producer's share
        records(0, [1], 0, value_offset=100),  # value does not match (producer, seq)
    ])
    flat, raw_sum, corrupt = index_records(bad, shares)
    assert flat.tolist() == [0]
    assert corrupt == 3
    assert raw_sum == int(bad["value"].sum())
