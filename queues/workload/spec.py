"""The experiment spec: a frozen, validated dataclass shared by the engine and Django."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from queues.errors import InvalidSpec
from queues.workload.events import MAX_EVENTS_PER_PRODUCER, MAX_PRODUCERS
from queues.workload.faults import FaultSpec, fault_parse, faults_check, faults_normalise

MAX_WORKERS = 256
ARRIVALS = ("uniform", "poisson")
_INT_TEXT = re.compile(r"^[+-]?\d[\d_]*(?:[eE]\+?\d+)?$")


@dataclass(frozen=True)
class WorkloadSpec:
    """What to run: the integers 1..events from ``producers`` to ``consumers`` over ``backend``.

    ``events_per_message`` events are packed in one queue message and ``batch`` messages move
    in one send or receive call. ``idle_timeout_s`` ends a run whose consumers have received
    nothing for that long once the producers are done: what is missing then is reported lost.

    Without ``rate_eps`` the run is a burst: send 1..events as fast as possible. With it the
    run is steady: producers follow an open-loop schedule of ``rate_eps`` events/s in total
    (``arrival`` uniform or poisson) for ``warmup_s + duration_s`` seconds, and ``events`` is
    derived: ``round(rate_eps * (warmup_s + duration_s))``, so the exact-sum check still holds.
    Figures of events intended during the warm-up are recorded but left out of the summary.

    ``faults`` are ``KIND@T[:ARG]`` texts (``queues.workload.faults``) applied at T seconds into a
    steady run; a worker a fault (or anyone) kills is replaced ``replace_after_s`` later, as a
    supervisor such as systemd or Kubernetes would.
    """

    backend: str = "memory-mp"
    events: int = 1_000_000
    producers: int = 1
    consumers: int = 1
    events_per_message: int = 1
    batch: int = 1000
    idle_timeout_s: float = 10.0
    rate_eps: float | None = None
    duration_s: float = 10.0
    warmup_s: float = 0.0
    arrival: str = "uniform"
    seed: int = 1
    faults: tuple[str, ...] = ()
    replace_after_s: float = 1.0

    def __post_init__(self) -> None:
        if self.rate_eps is not None:
            rate = _number("rate_eps", self.rate_eps, 0.1, 10_000_000)
            duration = _number("duration_s", self.duration_s, 0.1, 86_400)
            warmup = _number("warmup_s", self.warmup_s, 0.0, 86_400)
            object.__setattr__(self, "rate_eps", rate)
            object.__setattr__(self, "duration_s", duration)
            object.__setattr__(self, "warmup_s", warmup)
            object.__setattr__(self, "events", max(1, round(rate * (warmup + duration))))
        if self.arrival not in ARRIVALS:
            raise InvalidSpec(f"arrival must be one of {', '.join(ARRIVALS)}, got {self.arrival!r}", field="arrival")
        for name, low, high in (
            ("events", 1, MAX_EVENTS_PER_PRODUCER),
            ("producers", 1, min(MAX_WORKERS, MAX_PRODUCERS)),
            ("consumers", 1, MAX_WORKERS),
            ("events_per_message", 1, 100_000),
            ("batch", 1, 100_000),
        ):
            object.__setattr__(self, name, _whole_number(name, getattr(self, name), low, high))
        if self.producers > self.events:
            raise InvalidSpec(
                f"producers ({self.producers}) must not exceed events ({self.events}): "
                "every producer sends at least one event",
                field="producers",
            )
        timeout = _number("idle_timeout_s", self.idle_timeout_s, 0.1, 3600)
        object.__setattr__(self, "idle_timeout_s", timeout)
        if not isinstance(self.backend, str) or not self.backend:
            raise InvalidSpec("backend must be a backend alias such as 'memory-mp'", field="backend")
        object.__setattr__(self, "replace_after_s", _number("replace_after_s", self.replace_after_s, 0.0, 3600))
        object.__setattr__(self, "faults", faults_normalise(self.faults))
        faults_check(
            self.fault_specs,
            end_s=self.warmup_s + self.duration_s if self.steady else None,
            producers=self.producers,
            consumers=self.consumers,
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> WorkloadSpec:
        """Build from a dict (a form, a model row, parsed JSON), ignoring ``None`` values."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidSpec(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in values.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def fault_specs(self) -> tuple[FaultSpec, ...]:
        """The faults, parsed, in the order given."""
        return tuple(fault_parse(text) for text in self.faults)

    @property
    def steady(self) -> bool:
        return self.rate_eps is not None

    @property
    def steady_rate_eps(self) -> float:
        """The offered rate of a steady run (``ValueError`` for a burst, which has none)."""
        if self.rate_eps is None:
            raise ValueError("a burst has no offered rate")
        return self.rate_eps

    @property
    def expected_sum(self) -> int:
        """1 + 2 + ... + events."""
        return self.events * (self.events + 1) // 2

    def producer_shares(self) -> list[tuple[int, int]]:
        """``(base, count)`` per producer: producer ``p`` sends values ``base+1 .. base+count``.

        Event ``(p, seq)`` has the flat index ``base + seq`` and the value ``base + seq + 1``.
        """
        share, extra = divmod(self.events, self.producers)
        shares, base = [], 0
        for p in range(self.producers):
            count = share + (1 if p < extra else 0)
            shares.append((base, count))
            base += count
        return shares


def spec_defaults() -> dict[str, Any]:
    """Each spec field's default: the one place the model and the command take theirs from."""
    return {f.name: f.default for f in fields(WorkloadSpec)}


def _whole_number(name: str, value: Any, low: int, high: int) -> int:
    allowed = f"{name} must be a whole number from {low} to {high}, got {value!r}"
    if isinstance(value, bool):
        raise InvalidSpec(allowed, field=name)
    if isinstance(value, str):
        text = value.strip()
        if not _INT_TEXT.match(text):
            raise InvalidSpec(allowed, field=name)
        number = float(text.replace("_", "")) if "e" in text.lower() else int(text.replace("_", ""))
        value = number
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidSpec(allowed, field=name)
        value = int(value)
    if not isinstance(value, int) or not low <= value <= high:
        raise InvalidSpec(allowed, field=name)
    return value


def _number(name: str, value: Any, low: float, high: float) -> float:
    allowed = f"{name} must be a number from {low} to {high}, got {value!r}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidSpec(allowed, field=name) from None
    if not low <= number <= high:
        raise InvalidSpec(allowed, field=name)
    return number
