"""Correctness accounting: which (producer, sequence) arrived, how often, and what they sum to.

Each event has a flat index ``base[producer] + seq`` in ``0 .. events-1`` and the value
``index + 1`` (see ``WorkloadSpec.producer_shares``). The ledger keeps one counter per index in
a numpy array, so a million events cost 4 MB and a batch is one ``np.add.at``.

The work is split so that the ledger survives a consumer being killed: a consumer calls
``index_records`` on what it received and reports the indices to the runner *before* it acks;
the runner's ``Ledger`` adds them. An event a consumer reported and then failed to ack comes
back and is counted twice: exactly what at-least-once delivery means.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from queues.workload import WorkloadSpec

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
    """Counts every event index received. Not thread-safe: the runner owns it."""

    def __init__(self, spec: WorkloadSpec) -> None:
        self.spec = spec
        self.shares = Shares.of(spec)
        self.counts = np.zeros(spec.events, dtype=np.uint32)
        self.received = 0
        self.unique = 0
        self.raw_sum = 0
        self.corrupt = 0

    def add_indices(self, flat: np.ndarray, raw_sum: int, corrupt: int = 0) -> int:
        """Count a reported batch; return how many of its events were new."""
        before = self.unique
        if len(flat) and (len(flat) == 1 or bool((flat[1:] > flat[:-1]).all())):
            # the common case, one producer's run in order: no index twice in the batch
            self.unique += int(np.count_nonzero(self.counts[flat] == 0))
            self.counts[flat] += 1
        elif len(flat):
            np.add.at(self.counts, flat, 1)
            # only the touched slots can have changed from 0 to 1
            touched = np.unique(flat)
            self.unique += int(np.count_nonzero(self.counts[touched] == _first_seen(flat, touched)))
        self.received += len(flat)
        self.raw_sum += raw_sum
        self.corrupt += corrupt
        return self.unique - before

    def add_records(self, records: np.ndarray) -> int:
        """Index and count decoded records in one step (in-process approaches)."""
        flat, raw_sum, corrupt = index_records(records, self.shares)
        return self.add_indices(flat, raw_sum, corrupt)

    @property
    def complete(self) -> bool:
        return self.unique == self.spec.events

    def result(self, *, examples: int = 10) -> LedgerResult:
        seen = self.counts > 0
        unique = int(np.count_nonzero(seen))
        received = int(self.counts.sum(dtype=np.int64))
        missing = np.flatnonzero(~seen)
        unique_sum = int(np.flatnonzero(seen).sum(dtype=np.int64)) + unique
        lost = self.spec.events - unique
        duplicates = received - unique
        verdict = LOST if lost else DUPLICATED if duplicates else EXACT
        return LedgerResult(
            events=self.spec.events,
            received=received,
            unique=unique,
            duplicates=duplicates,
            lost=lost,
            corrupt=self.corrupt,
            raw_sum=self.raw_sum,
            unique_sum=unique_sum,
            expected_sum=self.spec.expected_sum,
            verdict=verdict,
            lost_examples=[self._locate(int(i)) for i in missing[:examples]],
        )

    def _locate(self, flat: int) -> tuple[int, int]:
        producer = int(np.searchsorted(self.shares.base, flat, side="right") - 1)
        return producer, flat - int(self.shares.base[producer])


def _first_seen(flat: np.ndarray, touched: np.ndarray) -> np.ndarray:
    """For each touched slot, the count it has if this batch brought its first copy(ies)."""
    occurrences = np.bincount(np.searchsorted(touched, flat), minlength=len(touched))
    return occurrences.astype(np.uint32)
