"""Open-loop send schedules: the intended send time of every event, fixed in advance.

A producer that falls behind sends late and records how late; it never moves the schedule
(wrk2, the OpenMessaging Benchmark and ``pgbench --rate`` measure the same way), so a stalled
queue shows up in the latency percentiles instead of being hidden (coordinated omission).

The offsets are computed on demand, never for the whole run at once: a run may have billions of
events, and a producer must hold memory for what it is sending, not for N. Uniform offsets
have a closed form; Poisson offsets are a running sum of seeded exponential gaps, generated a
chunk at a time, with the generator's state kept at each chunk's start so that any chunk can
be made again, identical to the whole-array computation.
"""

from __future__ import annotations

import bisect
from typing import Any, Protocol

import numpy as np

from queues.workload.spec import WorkloadSpec

#: Poisson offsets are generated this many at a time (2 MB of int64 a chunk).
CHUNK_EVENTS = 1 << 18
#: Poisson chunks kept generated (a send's offsets may span two chunks).
CACHED_CHUNKS = 2


class Offsets(Protocol):
    """One producer's intended send offsets, nondecreasing, ``count`` of them."""

    count: int

    def due(self, elapsed_ns: int) -> int: ...

    def offsets(self, start: int, n: int) -> np.ndarray: ...


class Schedule:
    """Intended send offsets (ns after the run's start) of one producer's events."""

    def __init__(self, spec: WorkloadSpec, producer: int) -> None:
        if spec.rate_eps is None:
            raise ValueError("a burst has no schedule")
        self.count = spec.producer_shares()[producer][1]
        interval_ns = 1e9 / (spec.rate_eps / spec.producers)
        self._offsets: Offsets
        if spec.arrival == "poisson":
            self._offsets = PoissonOffsets(self.count, interval_ns, seed=[spec.seed, producer])
        else:
            # producers interleave: producer p starts p/producers of an interval late
            self._offsets = UniformOffsets(self.count, interval_ns, start=producer / spec.producers)

    def due(self, elapsed_ns: int) -> int:
        """How many events are due by ``elapsed_ns`` after the start."""
        return self._offsets.due(elapsed_ns)

    def offset_ns(self, index: int) -> int:
        """The intended offset of event ``index``."""
        return int(self._offsets.offsets(index, 1)[0])

    def offsets(self, start: int, n: int) -> np.ndarray:
        """The intended offsets (int64 ns) of events ``start .. start+n-1`` (fewer past the end)."""
        return self._offsets.offsets(start, max(0, min(n, self.count - start)))


class UniformOffsets:
    """Event ``k`` at ``(k + start) x interval_ns``: a closed form, nothing stored."""

    def __init__(self, count: int, interval_ns: float, *, start: float) -> None:
        self.count, self.interval_ns, self.start = count, interval_ns, start

    def offsets(self, start: int, n: int) -> np.ndarray:
        # the same float operations as over the whole range, so the same integers
        return ((np.arange(start, start + n) + self.start) * self.interval_ns).astype(np.int64)

    def due(self, elapsed_ns: int) -> int:
        if elapsed_ns < 0:
            return 0
        # the closed form's inverse, then corrected by the offsets themselves (float rounding)
        k = min(self.count, max(0, int(elapsed_ns / self.interval_ns - self.start) + 1))
        while k > 0 and self._at(k - 1) > elapsed_ns:
            k -= 1
        while k < self.count and self._at(k) <= elapsed_ns:
            k += 1
        return k

    def _at(self, k: int) -> int:
        return int(self.offsets(k, 1)[0])


class PoissonOffsets:
    """Running sums of exponential gaps (mean ``interval_ns``) from a generator seeded with
    ``seed``, chunk by chunk. The generator's state and the running sum at each chunk's start
    are kept (a few hundred bytes a chunk), so a chunk dropped from the cache is made again."""

    def __init__(self, count: int, interval_ns: float, *, seed: Any) -> None:
        self.count, self.interval_ns = count, interval_ns
        self._rng = np.random.default_rng(seed)
        self._states: list[dict[str, Any]] = []  # the generator's state at each chunk's start
        self._carries: list[float] = []  # the running sum (float, as the whole cumsum has it) before each chunk
        self._lasts: list[int] = []  # each chunk's last offset, to find a time's chunk
        self._cache: dict[int, np.ndarray] = {}
        self._next_carry = 0.0  # the running sum after the last chunk made

    def due(self, elapsed_ns: int) -> int:
        while self._lasts[-1:] <= [elapsed_ns] and len(self._lasts) * CHUNK_EVENTS < self.count:
            self._chunk(len(self._lasts))  # generate up to the chunk that holds ``elapsed_ns``
        i = bisect.bisect_right(self._lasts, elapsed_ns)
        if i == len(self._lasts):
            return self.count
        return i * CHUNK_EVENTS + int(np.searchsorted(self._chunk(i), elapsed_ns, side="right"))

    def offsets(self, start: int, n: int) -> np.ndarray:
        if n <= 0:
            return np.empty(0, dtype=np.int64)
        parts = []
        for i in range(start // CHUNK_EVENTS, (start + n - 1) // CHUNK_EVENTS + 1):
            first = i * CHUNK_EVENTS
            parts.append(self._chunk(i)[max(start, first) - first : start + n - first])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _chunk(self, i: int) -> np.ndarray:
        if i in self._cache:
            return self._cache[i]
        while len(self._states) < i:
            self._chunk(len(self._states))  # chunks are made in order the first time
        if i == len(self._states):
            rng = self._rng  # the frontier: go on from where the generator is
            self._states.append(dict(rng.bit_generator.state))
            self._carries.append(self._next_carry)
        else:
            rng = np.random.Generator(type(self._rng.bit_generator)())
            rng.bit_generator.state = self._states[i]
        gaps = rng.exponential(self.interval_ns, min(CHUNK_EVENTS, self.count - i * CHUNK_EVENTS))
        gaps[0] += self._carries[i]  # the whole array's cumsum adds each gap to the sum so far
        sums = np.cumsum(gaps)
        offsets = sums.astype(np.int64)
        if i == len(self._lasts):
            self._lasts.append(int(offsets[-1]))
            self._next_carry = float(sums[-1])
        self._cache[i] = offsets
        while len(self._cache) > CACHED_CHUNKS:
            del self._cache[next(iter(self._cache))]
        return offsets
