"""A consumer's counting of what it received: the events' flat ledger indices and raw sum
(``count_bodies``, ``count_one`` for a task library's one-event message) and their latencies,
gathered in a ``HistBuffer`` and shipped as encoded HdrHistograms every ``HIST_FLUSH_S``.

The histograms a worker keeps:

- consumers: ``e2e`` (receipt minus intended send time, events of the measured window),
  ``e2e_warmup`` (the same for warm-up events), ``from_send`` (receipt minus actual send time),
  ``e2e_negative`` (distributed runs: latencies the clock correction made negative);
- producers (``queues.workers.producer``): ``send_delay`` and ``send_delay_warmup`` (actual
  minus intended send time) and ``publish`` (duration of each send call).
"""

from __future__ import annotations

import struct
import time
from typing import Any

import numpy as np

from queues.measurement.histograms import encode, new_histogram, record_many
from queues.measurement.ledger import Shares, index_records
from queues.workload.events import EVENT_SIZE, EVENT_STRUCT, MAGIC, decode_bodies

HIST_FLUSH_S = 0.2


class HistBuffer:
    """Latencies (us) gathered since the last flush, recorded into HdrHistograms at flush
    time: one vectorised ``record_many`` per flush rather than per batch."""

    def __init__(self, *names: str) -> None:
        self.names = names
        self.parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        self.singles: dict[str, list[int]] = {name: [] for name in names}  # ``add_one``'s
        self.last_flush = time.monotonic()

    def add(self, name: str, values_us: np.ndarray) -> None:
        if len(values_us):
            self.parts[name].append(values_us)

    def add_one(self, name: str, value_us: int) -> None:
        """One latency (a task library's one-event message: no array per value)."""
        self.singles[name].append(value_us)

    def add_split(self, name: str, values_us: np.ndarray, measured: np.ndarray) -> None:
        """``values_us[measured]`` under ``name``, the rest under ``name + "_warmup"``."""
        if measured.all():
            self.add(name, values_us)
        else:
            self.add(name, values_us[measured])
            self.add(f"{name}_warmup", values_us[~measured])

    def due(self) -> bool:
        return (
            any(self.parts.values()) or any(self.singles.values())
        ) and time.monotonic() - self.last_flush >= HIST_FLUSH_S

    def flush(self) -> dict[str, bytes]:
        """Encoded histograms of everything added since the last flush, by name."""
        for name, values in self.singles.items():
            if values:
                self.parts[name].append(np.array(values, dtype=np.int64))
        self.singles = {name: [] for name in self.names}
        encoded: dict[str, bytes] = {}
        by_parts: dict[tuple[int, ...], bytes] = {}
        for name, parts in self.parts.items():
            if not parts:
                continue
            key = tuple(id(p) for p in parts)  # the same arrays under two names: record once
            if key not in by_parts:
                hist = new_histogram()
                record_many(hist, np.concatenate(parts))
                by_parts[key] = encode(hist)
            encoded[name] = by_parts[key]
        self.parts = {name: [] for name in self.names}
        self.last_flush = time.monotonic()
        return encoded


def count_bodies(
    bodies: Any,
    shares: Shares,
    hists: HistBuffer,
    window: tuple[int, int],
    steady: bool,
    shift: np.ndarray | None = None,
) -> tuple[list[int], np.ndarray, int, int, int, int]:
    """What a consumer reports of ``bodies`` received now: the poison messages' indices, the
    events' flat indices, their raw sum, the corrupt records, the receipt time and the events of
    the measured window; their latencies go into ``hists``."""
    received_ns = time.time_ns()
    records, poison = decode_bodies(bodies)
    flat, raw_sum, corrupt = index_records(records, shares)
    record_latency(hists, received_ns, records, window[0], steady, shift)
    intended = records["intended_ns"]
    window_events = int(np.count_nonzero((intended >= window[0]) & (intended < window[1])))
    return poison, flat, raw_sum, corrupt, received_ns, window_events


def count_one(
    body: bytes,
    shares: Shares,
    hists: HistBuffer,
    window: tuple[int, int],
    steady: bool,
    shift: np.ndarray | None = None,
) -> tuple[bytes, int, int, int, int, int]:
    """What ``count_bodies([body])`` reports, as a ``BatchReport``'s fields (flat indices as
    bytes, raw sum, corrupt, poison, receipt time, window events), without numpy for a message
    of one well-formed event: a task library hands over one message per task, and numpy's
    per-call cost on arrays of one was most of a task's counting (measured here: 46 us a task in
    the worker's loop, against a few here). Anything else (several events, poison, a corrupt
    record) is counted by ``count_bodies``."""
    if len(body) == EVENT_SIZE:
        magic, producer, seq, value, intended, sent = EVENT_STRUCT.unpack_from(body)
        if magic == MAGIC and producer < len(shares.base) and seq < shares.count[producer]:
            flat = int(shares.base[producer]) + seq
            if value == flat + 1:  # the checks of ledger.index_records, for one record
                received_ns = time.time_ns()
                correction = 0 if shift is None else int(shift[producer])
                e2e = (received_ns - intended + correction) // 1000  # as record_latency
                measured = intended >= window[0]
                if shift is not None and e2e < 0:
                    hists.add_one("e2e_negative", -e2e)
                hists.add_one("e2e" if measured else "e2e_warmup", e2e)
                if not steady:
                    hists.add_one("from_send", e2e)
                elif measured:
                    hists.add_one("from_send", (received_ns - sent + correction) // 1000)
                return FLAT_INDEX.pack(flat), value, 0, 0, received_ns, int(window[0] <= intended < window[1])
    poison, flat_indices, raw_sum, corrupt, received_ns, window_events = count_bodies(
        [body], shares, hists, window, steady, shift
    )
    return flat_indices.tobytes(), raw_sum, corrupt, len(poison), received_ns, window_events


#: One flat ledger index as ``BatchReport.flat_indices`` carries it (``uint32``, native order).
FLAT_INDEX = struct.Struct("=I")


def record_latency(
    hists: HistBuffer,
    received_ns: int,
    records: np.ndarray,
    window_start: int,
    steady: bool,
    shift: np.ndarray | None = None,
) -> None:
    """``shift``: see ``WorkerContext.latency_shift_ns``. A latency that comes out negative
    after it (the clocks' offsets were off by more than the latency) is recorded as 1 us in
    ``e2e`` and, by its size, in ``e2e_negative``: counted and reported, never dropped."""
    intended = records["intended_ns"]
    correction: Any = 0
    if shift is not None:  # a corrupt record's producer may be none of the run's: no correction
        producer = records["producer"]
        known = producer < len(shift)
        correction = np.where(known, shift[np.where(known, producer, 0)], 0)
    e2e = (received_ns - intended + correction) // 1000
    measured = intended >= window_start
    hists.add_split("e2e", e2e, measured)
    if shift is not None and (negative := e2e < 0).any():
        hists.add("e2e_negative", -e2e[negative])
    if steady:
        hists.add("from_send", ((received_ns - records["sent_ns"] + correction) // 1000)[measured])
    else:
        hists.add("from_send", e2e)  # the intended time is the send time: recorded once at flush
