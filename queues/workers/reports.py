"""What a worker tells the runner, one type per kind of report.

Each message crosses a ``multiprocessing`` pipe, pickled. A consumer sends a ``BatchReport`` for
every batch it counts (hundreds a second; one per message with ``--batch 1``), so on the pipe a
message travels as ``to_wire``'s ``(tag, fields)`` tuple and is rebuilt by ``from_wire``:
pickling the object itself writes and looks up its class by name each time, which measured
about 5 us a message against 2 us for the tuple and the rebuild. The indices stay one ``bytes``
buffer rather than a list or an array object for the same reason.

The runner matches them by type (``match message: case BatchReport(): ...``).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

PRODUCER, CONSUMER = "producer", "consumer"


@dataclass(frozen=True, slots=True)
class Ready:
    """The worker is connected to the backend and waits for the start signal."""

    role: str
    index: int
    pid: int


@dataclass(frozen=True, slots=True)
class BatchReport:
    """What a consumer received since its last report, sent *before* it acks those batches.

    ``flat_indices`` is the ``uint32`` buffer of the events' flat ledger indices
    (``numpy.ndarray.tobytes``); ``received_ns`` is when the last of them arrived;
    ``histograms`` the consumer's latency histograms flushed with it, if due (see
    ``Histograms``); ``window_events`` how many of the events (deliveries) were intended for the
    steady run's measured window (every one in a burst, whose window is the whole run).
    """

    index: int
    flat_indices: bytes
    raw_sum: int
    corrupt: int
    poison: int
    received_ns: int
    histograms: dict[str, bytes] | None = None
    window_events: int = 0

    role = CONSUMER  # only consumers receive batches


@dataclass(frozen=True, slots=True)
class Histograms:
    """Latency histograms recorded since the worker's last flush, encoded, by name."""

    role: str
    index: int
    encoded: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Done:
    """The worker finished and closed its producer or consumer.

    A producer says how many events of the measured window it sent, when it sent its last event
    and its last event of the measured window (``time.time_ns``); a consumer leaves them at 0.
    """

    role: str
    index: int
    measured_sent: int = 0
    last_send_ns: int = 0
    last_window_send_ns: int = 0


@dataclass(frozen=True, slots=True)
class WorkerFailed:
    """The worker raised; ``detail`` is the exception as one line. The run fails with it."""

    role: str
    index: int
    detail: str

    def describe(self) -> str:
        return f"{self.role} {self.index}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Reconnected:
    """The worker lost its connection (``detail``: why, one line) and opened a new one at
    ``at_ns`` (``time.time_ns``). A producer sends the failed call again: ``resent`` is how
    many events that call held (some may have reached the queue: duplicates)."""

    role: str
    index: int
    at_ns: int
    detail: str
    resent: int = 0


Message = Ready | BatchReport | Histograms | Done | WorkerFailed | Reconnected

_KINDS: tuple[type[Any], ...] = (Ready, BatchReport, Histograms, Done, WorkerFailed, Reconnected)
_TAGS = {kind: tag for tag, kind in enumerate(_KINDS)}
_FIELDS = {kind: operator.attrgetter(*kind.__match_args__) for kind in _KINDS}


def to_wire(message: Message) -> tuple[int, tuple[Any, ...]]:
    """``message`` as plain values for the pipe: its kind's tag and its fields in order."""
    kind = type(message)
    return _TAGS[kind], _FIELDS[kind](message)


def from_wire(wire: tuple[int, tuple[Any, ...]]) -> Message:
    """The message ``to_wire`` encoded."""
    tag, values = wire
    return _KINDS[tag](*values)
