import numpy as np

from queues.measurement.histograms import (
    encode,
    merge_encoded,
    new_histogram,
    percentiles_ms,
    record_many,
    value_at_percentile,
)


def test_record_many_matches_record_value_exactly():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.integers(0, 10_000_000, 20_000), [0, 1, 2047, 2048, 4096, 10**13]])
    vectorised, one_by_one = new_histogram(), new_histogram()
    record_many(vectorised, values)
    for v in np.clip(values, 1, 3_600_000_000).tolist():
        one_by_one.record_value(v)
    assert np.array_equal(np.ctypeslib.as_array(vectorised.counts), np.ctypeslib.as_array(one_by_one.counts))
    assert vectorised.get_total_count() == one_by_one.get_total_count() == len(values)
    for p in (50, 90, 99, 99.9, 100):
        assert vectorised.get_value_at_percentile(p) == one_by_one.get_value_at_percentile(p)


def test_histograms_merge_through_their_encoding():
    a, b, both = new_histogram(), new_histogram(), new_histogram()
    record_many(a, np.full(900, 1_000))  # 1 ms
    record_many(b, np.full(100, 50_000))  # 50 ms
    merged = new_histogram()
    merge_encoded(merged, encode(a))
    merge_encoded(merged, encode(b))
    record_many(both, np.concatenate([np.full(900, 1_000), np.full(100, 50_000)]))
    assert percentiles_ms(merged) == percentiles_ms(both)
    figures = percentiles_ms(merged)
    assert figures["p50"] == 1.0 and figures["p99"] == 50.015 and figures["max"] == 50.015


def test_an_empty_histogram_has_no_percentiles():
    assert percentiles_ms(new_histogram()) is None


def test_value_at_percentile_is_the_librarys_value():
    rng = np.random.default_rng(7)
    shapes = [
        rng.integers(1, 3_600_000_000, 5_000),  # the whole range
        rng.lognormal(8, 2, 20_000).astype(np.int64),  # a latency-like tail
        np.full(3, 1_000),  # one value
        np.array([1]),  # the lowest value, a single event
        np.array([3_600_000_000, 1, 2]),  # the highest value
    ]
    for values in shapes:
        hist = new_histogram()
        record_many(hist, values)
        for p in (0, 0.1, 1, 25, 50, 90, 99, 99.9, 99.99, 100):
            assert value_at_percentile(hist, p) == hist.get_value_at_percentile(p), (p, values[:5])
