"""The runner's accounting: what the workers' reports add up to.

``Accounting`` owns the ledger, the merged latency histograms (over the whole run and over the
current sample interval), the tallies the summary needs and the samples. It is fed worker
messages (``apply``) and asked for a sample at each interval (``take_sample``); it does no I/O,
starts nothing and reads no clock except ``time.monotonic`` for the last progress, so it can
be driven by synthetic messages alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from queues.measurement.histograms import IntervalSample, bucket_counts, merge_encoded, new_histogram, percentiles_ms
from queues.measurement.ledger import Ledger
from queues.measurement.summary import SteadyCounts, offered_eps
from queues.workers.reports import (
    CONSUMER,
    PRODUCER,
    BatchReport,
    Done,
    Histograms,
    Message,
    Ready,
    Reconnected,
    WorkerFailed,
)
from queues.workload.schedule import Schedule
from queues.workload.spec import WorkloadSpec

# histograms summarised over the measured window; the *_warmup ones only feed the samples
SUMMARY_HISTOGRAMS = ("e2e", "from_send", "send_delay", "publish")
INTERVAL_HISTOGRAMS = {"e2e": "e2e", "e2e_warmup": "e2e", "send_delay": "send_delay", "send_delay_warmup": "send_delay"}


@dataclass
class Tally:
    """Counters updated from worker reports."""

    poison: int = 0
    last_new_ns: int = 0  # when the last new (not duplicate) event was received
    last_progress: float = 0.0  # time.monotonic() of the last batch report
    unique_by_window_end: int = 0  # steady: new events received before the measured window's end
    measured_sent: int = 0  # events of the measured window the producers sent
    last_send_ns: int = 0
    last_window_send_ns: int = 0  # the producers' last send of an event of the measured window
    window_received: int = 0  # deliveries of events of the measured window
    last_window_receipt_ns: int = 0  # when the last of them arrived
    recovered_at_end: int = 0  # events first counted by the final drain
    reported: dict[int, int] = field(default_factory=dict)  # events each consumer (by index) reported


@dataclass(frozen=True)
class Marker:
    """Something that happened to the run at ``t_s`` seconds after the start: a fault applied
    (``kind`` its kind), a worker replaced, a connection reopened. ``target`` is what it acted on
    (``consumer 0``, ``server``), ``outcome`` what came of it, in words. Samples carry the
    markers of their interval, so the charts show them where they happened."""

    t_s: float
    kind: str
    target: str
    outcome: str

    def as_dict(self) -> dict[str, Any]:
        return {"t_s": self.t_s, "kind": self.kind, "target": self.target, "outcome": self.outcome}


@dataclass(frozen=True)
class Kill:
    """A worker the runner killed, and the ledger when it did."""

    role: str
    index: int
    reason: str
    reported: int  # events it had reported (a consumer)
    unique_at_kill: int


class Accounting:
    """Everything counted in one run, from the workers' messages."""

    def __init__(self, spec: WorkloadSpec) -> None:
        self.spec = spec
        self.ledger = Ledger(spec)
        self.tally = Tally()
        self.totals = {name: new_histogram() for name in SUMMARY_HISTOGRAMS}
        self.interval = {name: new_histogram() for name in INTERVAL_HISTOGRAMS}
        self.samples: list[IntervalSample] = []
        # the steady run's schedules, for the events due at any time (the realised offer)
        self.schedules = [Schedule(spec, p) for p in range(spec.producers)] if spec.steady else []
        self.kills: list[Kill] = []
        self.markers: list[Marker] = []
        self._unsampled_markers = 0  # the last this many markers belong to the next sample
        self.reconnects = 0
        #: Events producers may have sent twice: the calls a reconnecting producer sent again,
        #: and a killed producer's last call (its replacement resumes after the last one counted).
        self.resend_bound = 0
        self.t0_ns: int | None = None  # the start signal on time.time_ns, set by the runner
        self.producers_disrupted = 0  # producers killed or reconnected: their unconfirmed sends may be lost
        #: The measured window's end on ``time.time_ns`` (steady runs), set at the start signal:
        #: what arrives before it counts towards ``unique_by_window_end`` (a running total, so
        #: that an hour-long run keeps no list of receipts).
        self.window_end_ns: int | None = None

    def apply(self, message: Message) -> None:
        """Count what ``message`` reports. Messages about the workers' state (ready, failed)
        count nothing: supervision handles them."""
        match message:
            case BatchReport():
                self._add_batch(message)
            case Histograms():
                self._merge_histograms(message.encoded)
            case Done(role=role) if role == PRODUCER:
                self.tally.measured_sent += message.measured_sent
                self.tally.last_send_ns = max(self.tally.last_send_ns, message.last_send_ns)
                self.tally.last_window_send_ns = max(self.tally.last_window_send_ns, message.last_window_send_ns)
            case Reconnected():
                self.reconnects += 1
                self.producers_disrupted += message.role == PRODUCER
                self.resend_bound += message.resent
                t_s = (message.at_ns - self.t0_ns) / 1e9 if self.t0_ns else 0.0
                self.mark(
                    t_s, "reconnect", f"{message.role} {message.index}", f"connection reopened after: {message.detail}"
                )
            case Done() | Ready() | WorkerFailed():
                pass  # nothing to count

    def _add_batch(self, report: BatchReport) -> None:
        indices = np.frombuffer(report.flat_indices, dtype=np.uint32)
        tally = self.tally
        if new := self.ledger.add_indices(indices, report.raw_sum, report.corrupt):
            tally.last_new_ns = max(tally.last_new_ns, report.received_ns)
        if self.spec.steady:
            if self.window_end_ns is None or report.received_ns < self.window_end_ns:
                tally.unique_by_window_end += new
            if report.window_events:
                tally.window_received += report.window_events
                tally.last_window_receipt_ns = max(tally.last_window_receipt_ns, report.received_ns)
        tally.reported[report.index] = tally.reported.get(report.index, 0) + len(indices)
        self.tally.poison += report.poison
        self.tally.last_progress = time.monotonic()
        if report.histograms:
            self._merge_histograms(report.histograms)

    def add_recovered(self, flat: np.ndarray, raw_sum: int, corrupt: int, poison: int) -> int:
        """Count what the final drain read (see ``queues.run.drain``); return how many events were
        new. Drained events are left out of the latency histograms, the drain time and the
        steady window's receipts: they measure the drain, not the run's flow."""
        new = self.ledger.add_indices(flat, raw_sum, corrupt)
        self.tally.recovered_at_end += new
        self.tally.poison += poison
        return new

    def mark(self, t_s: float, kind: str, target: str, outcome: str) -> Marker:
        """Record a marker (see ``Marker``); the next sample carries it."""
        marker = Marker(round(max(0.0, t_s), 3), kind, target, outcome)
        self.markers.append(marker)
        self._unsampled_markers += 1
        return marker

    def note_kill(self, *, role: str, index: int, reason: str) -> None:
        """Record that ``role`` ``index`` was killed now, and why."""
        reported = self.tally.reported.get(index, 0) if role == CONSUMER else 0
        self.kills.append(Kill(role, index, reason, reported, self.ledger.unique))
        if role == PRODUCER:  # the call it was in may have reached the queue, and is sent again
            self.resend_bound += self.spec.events_per_message * self.spec.batch
            self.producers_disrupted += 1

    def killed_workers(self) -> list[dict[str, Any]]:
        """Every worker the runner killed: role, index, why, the events it had reported, and
        the events first counted after its kill (by the other consumers or the final drain:
        at most what it held, plus what the queue still had)."""
        unique = self.ledger.unique
        return [
            {
                "role": k.role,
                "index": k.index,
                "reason": k.reason,
                "reported": k.reported,
                "new_after_kill": unique - k.unique_at_kill,
            }
            for k in self.kills
        ]

    def _merge_histograms(self, encoded: dict[str, bytes]) -> None:
        for name, blob in encoded.items():
            if name in self.totals:
                merge_encoded(self.totals[name], blob)
            if name in INTERVAL_HISTOGRAMS:
                merge_encoded(self.interval[name], blob)

    def due_by(self, elapsed_ns: int) -> int:
        """Events the schedule has made due by ``elapsed_ns`` after the start (intended send
        time at or before it); every event in a burst, which offers them all at once."""
        if not self.schedules:
            return self.spec.events
        return sum(schedule.due(elapsed_ns) for schedule in self.schedules)

    def take_sample(
        self,
        *,
        elapsed_s: float,
        produced: int,
        depth: int | None,
        due: int | None = None,
        depth_detail: dict[str, int | None] | None = None,
    ) -> IntervalSample:
        """Close the current interval at ``elapsed_s`` seconds into the run: a sample of the
        rates and latency since the previous one. ``produced`` is the events sent so far;
        ``due`` the events due by then (``due_by``; computed from ``elapsed_s`` if not given)."""
        consumed = self.ledger.received
        previous = self.samples[-1] if self.samples else None
        span = elapsed_s - (previous.t_s if previous else 0.0)
        if due is None:
            due = self.due_by(int(elapsed_s * 1e9))
        e2e = self._interval("e2e")
        buckets, sum_us = bucket_counts(e2e)
        sample = IntervalSample(
            t_s=round(elapsed_s, 3),
            produced=produced,
            consumed=consumed,
            unique=self.ledger.unique,
            produce_eps=round((produced - (previous.produced if previous else 0)) / span, 1) if span else 0.0,
            consume_eps=round((consumed - (previous.consumed if previous else 0)) / span, 1) if span else 0.0,
            depth=depth,
            # an event can be received a little after the producer read a later clock than the
            # runner: never below 0
            backlog=max(0, due - self.ledger.unique),
            due=due,
            depth_detail=depth_detail,
            latency_ms=percentiles_ms(e2e),
            latency_buckets=buckets,
            latency_sum_us=sum_us,
            offered_eps=offered_eps(self.spec, elapsed_s - span, elapsed_s),
            send_delay_p99_ms=(percentiles_ms(self._interval("send_delay")) or {}).get("p99"),
            markers=[m.as_dict() for m in self.markers[len(self.markers) - self._unsampled_markers :]] or None,
        )
        self._unsampled_markers = 0
        self.interval = {name: new_histogram() for name in INTERVAL_HISTOGRAMS}
        self.samples.append(sample)
        return sample

    def _interval(self, family: str) -> Any:
        """The interval's histogram of ``family``, warm-up events included."""
        merged = new_histogram()
        for name, fam in INTERVAL_HISTOGRAMS.items():
            if fam == family:
                merged.add(self.interval[name])
        return merged

    def steady_counts(self, *, t0_ns: int, window_ns: tuple[int, int], sent_total: int) -> SteadyCounts:
        """The steady figures' inputs; ``sent_total`` is every event the producers sent."""
        tally = self.tally
        begin_ns, end_ns = (t - t0_ns for t in window_ns)
        due_at_end = self.due_by(end_ns - 1)  # the window is [begin, end) of intended times
        return SteadyCounts(
            t0_ns=t0_ns,
            window_ns=window_ns,
            offered=due_at_end - self.due_by(begin_ns - 1),
            due_at_window_end=due_at_end,
            unique_by_window_end=tally.unique_by_window_end,
            measured_sent=tally.measured_sent,
            last_window_send_ns=tally.last_window_send_ns,
            window_received=tally.window_received,
            last_window_receipt_ns=tally.last_window_receipt_ns,
            last_send_ns=tally.last_send_ns,
            last_new_ns=tally.last_new_ns,
            sent_total=sent_total,
        )
