"""Correctness accounting: which (producer, sequence) arrived, how often, and what they sum to.

Each event has a flat index ``base[producer] + seq`` in ``0 .. events-1`` and the value
``index + 1`` (see ``WorkloadSpec.producer_shares``). The ledger keeps one bit per index (seen
or not) and two totals, received and unique, whose difference is the duplicates: N/8 bytes in
all, so that the spec's largest N (4.29e9 events) still fits in 512 MB, and a million events
cost 125 kB. A batch is a handful of vectorised numpy operations.

The work is split so that the ledger survives a consumer being killed: a consumer calls
``index_records`` on what it received and reports the indices to the runner *before* it acks;
the runner's ``Ledger`` adds them. An event a consumer reported and then failed to ack comes
back and is counted twice: exactly what at-least-once delivery means.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from queues.workload.spec import WorkloadSpec

EXACT, DUPLICATED, LOST = "exact", "duplicated", "lost"


@dataclass(frozen=True)
class Shares:
    """Per-producer bases and counts as arrays, for vectorised index checks."""

    base: np.ndarray
    count: np.ndarray

    @classmethod
    def of(cls, spec: WorkloadSpec) -> Shares:
        shares = spec.producer_shares()
        return cls(
            base=np.array([b for b, _ in shares], dtype=np.int64),
            count=np.array([c for _, c in shares], dtype=np.int64),
        )


def index_records(records: np.ndarray, shares: Shares) -> tuple[np.ndarray, int, int]:
    """``(flat indices, raw sum of values, corrupt count)`` for decoded event records.

    A record whose producer, sequence or value does not fit the workload is corrupt: it is
    counted as such and left out of the indices (it cannot be attributed to any event).
    """
    producer = records["producer"].astype(np.int64)
    seq = records["seq"].astype(np.int64)
    value = records["value"]
    known = producer < len(shares.base)
    safe_producer = np.where(known, producer, 0)
    flat = shares.base[safe_producer] + seq
    valid = known & (seq < shares.count[safe_producer]) & (value == flat + 1)
    raw_sum = int(value.sum(dtype=np.int64))
    if valid.all():
        return flat.astype(np.uint32), raw_sum, 0
    return flat[valid].astype(np.uint32), raw_sum, int((~valid).sum())


@dataclass(frozen=True)
class LedgerResult:
    events: int
    received: int
    unique: int
    duplicates: int
    lost: int
    corrupt: int
    raw_sum: int
    unique_sum: int
    expected_sum: int
    verdict: str
    lost_examples: list[tuple[int, int]]  # first (producer, seq) pairs never received

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Ledger:
    """Every event index received, as a bitmap, with the totals. Not thread-safe: the runner
    owns it."""

    def __init__(self, spec: WorkloadSpec) -> None:
        self.spec = spec
        self.shares = Shares.of(spec)
        self.bits = np.zeros((spec.events + 7) // 8, dtype=np.uint8)  # bit i % 8 of byte i // 8: index i seen
        self.received = 0
        self.unique = 0
        self.raw_sum = 0
        self.corrupt = 0

    @property
    def nbytes(self) -> int:
        """Memory held for the events (the bitmap)."""
        return self.bits.nbytes

    def add_indices(self, flat: np.ndarray, raw_sum: int, corrupt: int = 0) -> int:
        """Count a reported batch; return how many of its events were new."""
        before = self.unique
        if len(flat) == 1:  # a task library's report: one event, set without numpy's per-call cost
            byte, bit = int(flat[0]) >> 3, 1 << (int(flat[0]) & 7)
            if not (seen := int(self.bits[byte])) & bit:
                self.bits[byte] = seen | bit
                self.unique += 1
        elif len(flat):
            increasing = bool((flat[1:] > flat[:-1]).all())
            # the common case is one producer's run in order; otherwise sort out the copies
            # within the batch first (they are duplicates, counted by ``received`` alone)
            self._mark(flat if increasing else np.unique(flat))
        self.received += len(flat)
        self.raw_sum += raw_sum
        self.corrupt += corrupt
        return self.unique - before

    def _mark(self, flat: np.ndarray) -> None:
        """Set the bits of strictly increasing indices ``flat``, counting the new ones."""
        first, end = int(flat[0]), int(flat[-1]) + 1
        if end - first == len(flat):
            self._mark_range(first, end)
            return
        byte = flat >> 3
        bit = _BIT[flat & 7]
        self.unique += int(np.count_nonzero(self.bits[byte] & bit == 0))
        # indices sharing a byte are adjacent: OR their bits together, then write each byte once
        # (a fancy-index ``|=`` would keep only the last of several bits for one byte)
        starts = np.flatnonzero(np.concatenate(([True], byte[1:] != byte[:-1])))
        touched = byte[starts]
        self.bits[touched] |= np.bitwise_or.reduceat(bit, starts)

    def _mark_range(self, first: int, end: int) -> None:
        """Set the bits of ``first .. end-1`` (a burst's batch: a producer's run in order)."""
        low, high = first >> 3, (end + 7) >> 3
        bits = np.unpackbits(self.bits[low:high], bitorder="little")
        span = bits[first - 8 * low : end - 8 * low]
        self.unique += len(span) - int(np.count_nonzero(span))
        span[:] = 1
        self.bits[low:high] = np.packbits(bits, bitorder="little")

    def add_records(self, records: np.ndarray) -> int:
        """Index and count decoded records in one step (in-process approaches)."""
        flat, raw_sum, corrupt = index_records(records, self.shares)
        return self.add_indices(flat, raw_sum, corrupt)

    def seen(self, indices: np.ndarray) -> np.ndarray:
        """Whether each of ``indices`` was received at least once (booleans)."""
        indices = np.asarray(indices, dtype=np.int64)
        return (self.bits[indices >> 3] & _BIT[indices & 7]) != 0

    @property
    def complete(self) -> bool:
        return self.unique == self.spec.events

    def result(self, *, examples: int = 10) -> LedgerResult:
        unique, unique_sum, missing = self._scan(examples)
        lost = self.spec.events - unique
        duplicates = self.received - unique
        verdict = LOST if lost else DUPLICATED if duplicates else EXACT
        return LedgerResult(
            events=self.spec.events,
            received=self.received,
            unique=unique,
            duplicates=duplicates,
            lost=lost,
            corrupt=self.corrupt,
            raw_sum=self.raw_sum,
            unique_sum=unique_sum,
            expected_sum=self.spec.expected_sum,
            verdict=verdict,
            lost_examples=[self._locate(i) for i in missing],
        )

    def _scan(self, examples: int) -> tuple[int, int, list[int]]:
        """``(unique, sum of the values of the indices seen, the first missing indices)``,
        recounted from the bitmap a chunk at a time (no N-sized temporary)."""
        unique = unique_sum = 0
        missing: list[int] = []
        for first in range(0, len(self.bits), SCAN_CHUNK_BYTES):
            chunk = self.bits[first : first + SCAN_CHUNK_BYTES]
            ones = _POPCOUNT[chunk]
            unique += int(ones.sum(dtype=np.int64))
            # the indices of byte b are 8b + bit: their sum is 8b x ones + the sum of bit positions
            byte = np.arange(first, first + len(chunk), dtype=np.int64)
            unique_sum += int((8 * byte * ones).sum(dtype=np.int64)) + int(_BIT_POSITION_SUM[chunk].sum(dtype=np.int64))
            if len(missing) < examples:
                missing += self._missing_in(chunk, first, examples - len(missing))
        return unique, unique_sum + unique, missing  # value = index + 1

    def _missing_in(self, chunk: np.ndarray, first_byte: int, limit: int) -> list[int]:
        """Up to ``limit`` indices below N whose bit is clear, in byte ``first_byte`` onwards."""
        found: list[int] = []
        for b in np.flatnonzero(chunk != 0xFF):
            bits = np.unpackbits(chunk[b : b + 1], bitorder="little")
            for i in np.flatnonzero(bits == 0):
                index = 8 * (first_byte + int(b)) + int(i)
                if index >= self.spec.events:  # the last byte's padding
                    return found
                found.append(index)
                if len(found) == limit:
                    return found
        return found

    def _locate(self, flat: int) -> tuple[int, int]:
        producer = int(np.searchsorted(self.shares.base, flat, side="right") - 1)
        return producer, flat - int(self.shares.base[producer])


#: ``result`` reads the bitmap this many bytes (8x as many events) at a time.
SCAN_CHUNK_BYTES = 1 << 20
_BIT = (1 << np.arange(8)).astype(np.uint8)
_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1).astype(np.int64)
_BIT_POSITION_SUM = (
    np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little") * np.arange(8)
).sum(axis=1)
