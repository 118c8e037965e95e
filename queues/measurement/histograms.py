"""Latency histograms (HdrHistogram, microseconds), interval samples and percentile summaries.

Every process records into its own histograms and ships them encoded (``encode``); the runner
merges them with ``decode_and_add``. ``record_many`` records a whole numpy array at once: the
per-value ``record_value`` of the hdrhistogram package costs about 0.65 us a value here, which
would dominate a million-event run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour: anything slower is clamped to it
SIGNIFICANT_DIGITS = 3
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))
#: Upper bounds of the latency buckets exported to Prometheus: 100 us doubling to 104.9 s (the
#: last one covers a minute). Each is a multiple of the HdrHistogram's resolution where it lies
#: (100 us * 2**k always is), so every histogram slot lies wholly below or wholly above a
#: bound, and the counts per bucket are exact, not interpolated.
LATENCY_BUCKETS_US = tuple(100 * 2**k for k in range(21))


def new_histogram() -> HdrHistogram:
    """An empty latency histogram in microseconds, 3 significant digits."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record_many(hist: HdrHistogram, values_us: np.ndarray) -> None:
    """Record every value of ``values_us`` (integers, microseconds) into ``hist``.

    Computes the HdrHistogram counts index of each value in numpy (the same arithmetic as
    ``HdrHistogram._counts_index_for``) and adds a ``bincount`` into the counts array. Values
    below 1 us are recorded as 1 us and values above an hour as an hour.
    """
    if len(values_us) == 0:
        return
    values = np.clip(np.asarray(values_us, dtype=np.int64), LOWEST_US, HIGHEST_US)
    # smallest power of two containing (value | mask): frexp's exponent is the bit length
    _, bit_length = np.frexp((values | hist.sub_bucket_mask).astype(np.float64))
    bucket = bit_length.astype(np.int64) - hist.unit_magnitude - (hist.sub_bucket_half_count_magnitude + 1)
    sub_bucket = values >> (bucket + hist.unit_magnitude)
    index = ((bucket + 1) << hist.sub_bucket_half_count_magnitude) + (sub_bucket - hist.sub_bucket_half_count)
    counts = np.ctypeslib.as_array(hist.counts)
    counts += np.bincount(index, minlength=hist.counts_len)[: hist.counts_len].astype(counts.dtype)
    hist.total_count += len(values)
    hist.min_value = min(hist.min_value, int(values.min()))
    hist.max_value = max(hist.max_value, int(values.max()))


def encode(hist: HdrHistogram) -> bytes:
    return hist.encode()


def merge_encoded(into: HdrHistogram, encoded: bytes) -> None:
    """Add an encoded histogram (from another process) into ``into``."""
    into.decode_and_add(encoded)


def percentiles_ms(hist: HdrHistogram) -> dict[str, float] | None:
    """p50, p90, p99, p99.9 and max in milliseconds, or ``None`` for an empty histogram."""
    if hist.get_total_count() == 0:
        return None
    values = values_at_percentiles(hist, [p for _, p in PERCENTILES])
    figures = {name: value / 1000.0 for (name, _), value in zip(PERCENTILES, values, strict=True)}
    figures["max"] = hist.get_max_value() / 1000.0
    return {k: round(v, 3) for k, v in figures.items()}


def values_at_percentiles(hist: HdrHistogram, percentiles: list[float]) -> list[int]:
    """``hist.get_value_at_percentile(p)`` for each ``p``, the same values, from one cumulative
    sum in numpy: the library walks the counts in Python (23,552 of them here) once per
    percentile, 5 ms for the four of every sample the runner takes each second, on the cores the
    run measures."""
    cumulative = np.cumsum(np.ctypeslib.as_array(hist.counts)[: hist.counts_len])
    values = []
    for percentile in percentiles:
        target = max(int(percentile * hist.total_count / 100 + 0.5), 1)  # the library's rounding
        index = int(np.searchsorted(cumulative, target))  # the first index whose running total reaches it
        if index >= hist.counts_len:
            values.append(0)
            continue
        value = hist.get_value_from_index(index)
        values.append(
            int(hist.get_highest_equivalent_value(value) if percentile else hist.get_lowest_equivalent_value(value))
        )
    return values


def value_at_percentile(hist: HdrHistogram, percentile: float) -> int:
    """``hist.get_value_at_percentile(percentile)`` (``values_at_percentiles`` for one)."""
    return values_at_percentiles(hist, [percentile])[0]


def bucket_counts(hist: HdrHistogram, bounds_us: tuple[int, ...] = LATENCY_BUCKETS_US) -> tuple[list[int], int]:
    """The values of ``hist`` per bucket and their sum in microseconds.

    Returns ``len(bounds_us) + 1`` counts, not cumulative: ``counts[i]`` is the values ``v``
    with ``bounds_us[i - 1] <= v < bounds_us[i]``, the last one those at or above the top bound.
    ``v < bound`` is Prometheus's ``le`` (latency <= bound) because values are whole
    microseconds rounded down. Exact for bounds on the histogram's grid (``LATENCY_BUCKETS_US``);
    the sum is within the histogram's resolution (exact below 2,048 us, 0.05 % above).
    """
    counts = np.ctypeslib.as_array(hist.counts)[: hist.counts_len].astype(np.int64)
    used = np.flatnonzero(counts)
    lowest, size = _slots(hist, used)
    per_bucket = np.bincount(
        np.searchsorted(np.asarray(bounds_us), lowest, side="right"), weights=counts[used], minlength=len(bounds_us) + 1
    )
    # each slot's values taken at its middle, as HdrHistogram's own mean does
    total_us = int(((lowest + (size >> 1)) * counts[used]).sum())
    return [int(c) for c in per_bucket], total_us


def _slots(hist: HdrHistogram, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lowest value and the width of the counts slots at ``index`` (the arithmetic of
    ``HdrHistogram.get_value_from_index``, over an array)."""
    index = index.astype(np.int64)
    bucket = (index >> hist.sub_bucket_half_count_magnitude) - 1
    sub_bucket = (index & (hist.sub_bucket_half_count - 1)) + hist.sub_bucket_half_count
    first = bucket < 0
    sub_bucket[first] -= hist.sub_bucket_half_count
    bucket[first] = 0
    shift = bucket + hist.unit_magnitude
    return sub_bucket << shift, np.left_shift(1, shift)


@dataclass
class IntervalSample:
    """One interval of a run, as stored and streamed.

    ``t_s`` is the end of the interval, in seconds since the producers started. Counts are
    cumulative; rates are over the interval: ``offered_eps`` the rate the schedule asked for
    (``None`` in a burst), ``produce_eps`` what the producers sent, ``consume_eps`` what the
    consumers received (deliveries). ``due`` is the events the schedule had made due by ``t_s``
    (the realised schedule, every event in a burst); ``backlog`` is ``due`` minus the events
    received (unique), so it counts events due but not yet sent as well as those in the queue,
    and is never negative. ``depth`` is the backend's own count of messages not yet acked
    (``None`` where it cannot tell) and ``depth_detail`` its parts where the backend shows
    them (RabbitMQ's ready and unacked, a Redis stream's stored length), else ``None``.
    ``latency_ms`` covers the events received in the interval, warm-up included;
    ``send_delay_p99_ms`` the producers' lateness. ``latency_buckets`` counts the same events
    per bucket of ``LATENCY_BUCKETS_US`` (see ``bucket_counts``) and ``latency_sum_us`` adds
    up their latencies: a distribution that can be summed across intervals and machines, as
    percentiles cannot (the Prometheus histogram is fed these). ``markers`` are what happened
    in the interval (faults applied, workers replaced, connections reopened: see
    ``queues.run.accounting.Marker``), ``None`` when nothing did.
    """

    t_s: float
    produced: int
    consumed: int
    unique: int
    produce_eps: float
    consume_eps: float
    depth: int | None
    backlog: int
    latency_ms: dict[str, float] | None
    offered_eps: float | None = None
    send_delay_p99_ms: float | None = None
    due: int | None = None
    depth_detail: dict[str, int | None] | None = None
    latency_buckets: list[int] | None = None
    latency_sum_us: int = 0
    markers: list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
