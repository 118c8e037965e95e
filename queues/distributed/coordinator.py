"""A run split over load hosts: the plan, the hosts' reports, and both ends of the run.

The coordinator is an ordinary ``Runner`` whose ``Supervisor`` is replaced by a
``RemoteSupervisor``: instead of forking workers it hands each host its share (``HostLink``, the
transport, lives in ``experiments``), and instead of reading the workers' pipes it reads the
hosts' reports. A report relays the host's worker messages (``queues.workers.reports``) unchanged but
for their times, which are moved onto the coordinator's clock; so the coordinator's
``Accounting`` merges them exactly as it merges local workers' messages: counters summed,
ledger indices united (duplicates across hosts are still duplicates), encoded HdrHistograms
added, never percentiles averaged. The samples, the drain and the summary are a single
machine's.

A host runs ``run_share``: its workers, forked as the local runner forks them, wait at the start
barrier until the coordinator sets one absolute start time (on the reference clock, converted
with each host's measured offset); then it reports every ``REPORT_S`` until told to stop.

Clocks: ``reference = local + offset`` for every machine (``queues.measurement.clocks``). A consumer on host
B measures an event of a producer on host A as ``received_B - intended_A``; the true latency is
that plus ``offset_B - offset_A`` (``latency_shifts``), applied per event by the consumer.
What comes out negative (an offset off by more than the latency) is counted, never dropped.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import msgpack  # type: ignore[import-untyped]

from queues.backends import Backend
from queues.errors import InvalidSpec, QueueError
from queues.measurement.clocks import ClockOffset
from queues.measurement.histograms import encode, merge_encoded, new_histogram, percentiles_ms
from queues.run.runner import Runner, RunResult, _Clock
from queues.workers.channel import SharedFlag
from queues.workers.context import WorkerContext
from queues.workers.reports import (
    CONSUMER,
    PRODUCER,
    BatchReport,
    Done,
    Histograms,
    Message,
    Reconnected,
    WorkerFailed,
    from_wire,
    to_wire,
)
from queues.workers.supervision import Supervisor
from queues.workload.spec import WorkloadSpec

log = logging.getLogger(__name__)

REPORT_S = 0.5  # a host reports this often
#: A host whose reports stopped for this long is lost: the run fails naming it (within 3 s of
#: its last report, with the coordinator's polling).
HOST_LOST_AFTER_S = 2.0
REPORT_POLL_S = 0.1  # the coordinator reads new reports this often
START_LEAD_S = 0.5  # the start time is set this far ahead: every host must read it before
JOIN_TIMEOUT_S = 30.0  # every share must have its workers ready by then


# -- the plan ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Share:
    """What one host runs: producer and consumer indices of the run."""

    host: str
    producers: tuple[int, ...] = ()
    consumers: tuple[int, ...] = ()


def plan_shares(spec: WorkloadSpec, placement: Mapping[str, Any]) -> dict[str, Share]:
    """Each host's share for ``placement`` (``{"producers": {"A": 2}, "consumers": {"B": 1,
    "C": 1}}``): indices handed out in the order the hosts are named. Raises ``InvalidSpec``
    when the counts do not add up to the spec's, or a count is not a whole number."""
    if not isinstance(placement, Mapping) or set(placement) - {"producers", "consumers"}:
        raise InvalidSpec(
            f'placement must be {{"producers": {{HOST: N}}, "consumers": {{HOST: N}}}}, got {placement!r}',
            field="placement",
        )
    if spec.faults:
        raise InvalidSpec("a run placed on load hosts takes no faults (not supported yet)", field="placement")
    shares: dict[str, dict[str, list[int]]] = {}
    for role, wanted in (("producers", spec.producers), ("consumers", spec.consumers)):
        counts = placement.get(role) or {}
        if not isinstance(counts, Mapping) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts.values()
        ):
            raise InvalidSpec(f"placement's {role} must map host names to whole numbers, got {counts!r}",
                              field="placement")
        if sum(counts.values()) != wanted:
            raise InvalidSpec(f"placement puts {sum(counts.values())} {role} on hosts, the spec has {wanted}",
                              field="placement")
        index = 0
        for host, n in counts.items():
            share = shares.setdefault(str(host), {"producers": [], "consumers": []})
            share[role] += range(index, index + n)
            index += n
    return {h: Share(h, tuple(s["producers"]), tuple(s["consumers"])) for h, s in shares.items()
            if s["producers"] or s["consumers"]}


def latency_shifts(shares: Mapping[str, Share], offsets_s: Mapping[str, float], producers: int) -> dict[str, list[int]]:
    """For each host, what its consumers add to an event's measured latency, by producer
    index: ``offset(consumer's host) - offset(producer's host)`` in ns."""
    host_of = {p: s.host for s in shares.values() for p in s.producers}
    return {
        host: [round((offsets_s[host] - offsets_s[host_of[p]]) * 1e9) if p in host_of else 0 for p in range(producers)]
        for host in shares
    }


# -- reports ----------------------------------------------------------------------------------

@dataclass
class HostReport:
    """One host's report: the worker messages since its last one, its producers' sent counts,
    its own e2e histogram so far (encoded), whether it is its last, and an error if it failed."""

    seq: int
    messages: list[Message]
    sent: dict[int, int] = field(default_factory=dict)
    e2e: bytes = b""
    final: bool = False
    error: str | None = None

    def encode(self) -> bytes:
        return zlib.compress(msgpack.packb({
            "seq": self.seq, "messages": [to_wire(m) for m in self.messages], "sent": list(self.sent.items()),
            "e2e": self.e2e, "final": self.final, "error": self.error,
        }, use_bin_type=True), 1)

    @classmethod
    def decode(cls, payload: bytes) -> HostReport:
        data = msgpack.unpackb(zlib.decompress(payload), raw=False)
        return cls(data["seq"], [from_wire(tuple(w)) for w in data["messages"]], dict(data["sent"]), data["e2e"],
                   data["final"], data["error"])


def on_clock(message: Message, shift_ns: int) -> Message:
    """``message`` with its times (``time.time_ns`` of the host) moved by ``shift_ns``."""
    if not shift_ns:
        return message
    match message:
        case BatchReport():
            return replace(message, received_ns=message.received_ns + shift_ns)
        case Done(role=role) if role == PRODUCER:
            return replace(message, last_send_ns=message.last_send_ns and message.last_send_ns + shift_ns,
                           last_window_send_ns=message.last_window_send_ns and message.last_window_send_ns + shift_ns)
        case Reconnected():
            return replace(message, at_ns=message.at_ns + shift_ns)
    return message


def union_histogram(encoded: Sequence[bytes]) -> Any:
    """The sum of encoded histograms (what the merged run's must equal)."""
    total = new_histogram()
    for blob in encoded:
        if blob:
            merge_encoded(total, blob)
    return total


# -- the coordinator --------------------------------------------------------------------------

class HostLink(Protocol):
    """The coordinator's transport to its hosts (``experiments.hosts.distribution``)."""

    def dispatch(self, shares: Mapping[str, Share]) -> float:
        """Hand every host its share; the coordinator's own clock offset (s). Raises
        ``QueueError`` naming the hosts that do not answer or have no free worker."""

    def joined(self) -> dict[str, float]:
        """The hosts whose workers are ready: their clock offsets (s)."""

    def failed(self) -> dict[str, str]:
        """The hosts whose share failed: their errors."""

    def start(self, start_ns: int, shifts: Mapping[str, list[int]]) -> None:
        """Set the start time (reference clock, ns) and each host's latency shifts."""

    def reports(self) -> list[tuple[str, bytes]]:
        """New reports since the last call, in the order they were written: (host, payload)."""

    def stop(self) -> None:
        """Tell every host to stop its workers and send its last report."""


class RemoteSupervisor:
    """What ``Runner`` asks of a ``Supervisor``, answered by the hosts (see the module)."""

    def __init__(self, *, link: HostLink, shares: Mapping[str, Share], context: WorkerContext,
                 on_message: Callable[[Message], None], stop_timeout_s: float, join_timeout_s: float) -> None:
        self.link, self.shares, self.context, self.on_message = link, shares, context, on_message
        self.stop_timeout_s, self.join_timeout_s = stop_timeout_s, join_timeout_s
        self.workers: list[Any] = []
        self.replaced, self.last_kill = 0, None
        self.failures: list[WorkerFailed] = []
        self.producers_left = {p for s in shares.values() for p in s.producers}
        self.offsets_s: dict[str, float] = {}
        self.own_offset_s = 0.0
        self.last_report: dict[str, float] = {}
        self.final: set[str] = set()
        self.host_e2e: dict[str, bytes] = {}
        self.lost: str | None = None  # the host found lost, with why
        self.next_poll = 0.0

    def spawn(self, role: str, index: int) -> None:
        """Nothing to fork here: the hosts start the workers of their shares."""

    def consumers(self) -> list[Any]:
        return []

    def await_ready(self) -> None:
        self.own_offset_s = self.link.dispatch(self.shares)
        deadline = time.monotonic() + self.join_timeout_s
        while set(joined := self.link.joined()) != set(self.shares):
            if failed := self.link.failed():
                raise QueueError("; ".join(f"host {h}: {e}" for h, e in sorted(failed.items())))
            if time.monotonic() > deadline:
                missing = sorted(set(self.shares) - set(joined))
                raise QueueError(f"load host(s) {', '.join(missing)} did not join within {self.join_timeout_s:g} s "
                                 "(their workers were not ready)")
            time.sleep(REPORT_POLL_S)
        self.offsets_s = joined

    def start_at(self, t0_ns: int) -> None:
        """Start every host at ``t0_ns`` on this machine's clock."""
        offsets = {**self.offsets_s}
        self.link.start(t0_ns + round(self.own_offset_s * 1e9),
                        latency_shifts(self.shares, offsets, len(self.context.sent)))
        now = time.monotonic()
        self.last_report = {h: now for h in self.shares}

    def shift_ns(self, host: str) -> int:
        """From host ``host``'s clock to this machine's."""
        return round((self.offsets_s.get(host, 0.0) - self.own_offset_s) * 1e9)

    def pump(self, poll_s: float) -> None:
        time.sleep(poll_s)
        if time.monotonic() >= self.next_poll:
            self.next_poll = time.monotonic() + REPORT_POLL_S
            self.receive()

    def receive(self) -> None:
        for host, payload in self.link.reports():
            report = HostReport.decode(payload)
            self.last_report[host] = time.monotonic()
            shift = self.shift_ns(host)
            for message in report.messages:
                message = on_clock(message, shift)
                match message:
                    case Done(role=role, index=index) if role == PRODUCER:
                        self.producers_left.discard(index)
                    case WorkerFailed():
                        self.failures.append(message)
                self.on_message(message)
            for index, sent in report.sent.items():
                self.context.sent[int(index)] = sent
            if report.e2e:
                self.host_e2e[host] = report.e2e
            if report.error:
                self.failures.append(WorkerFailed("host", 0, f"host {host}: {report.error}"))
            if report.final:
                self.final.add(host)

    def check(self) -> None:
        if self.failures:
            raise QueueError(self.failures[0].describe())
        now = time.monotonic()
        for host, last in self.last_report.items():
            if host not in self.final and now - last > HOST_LOST_AFTER_S:
                self.lost = f"load host {host} lost: no report for {now - last:.1f} s"
                raise QueueError(self.lost)

    def producers_done(self) -> bool:
        return not self.producers_left

    def stop(self) -> None:
        """Stop every host and read their last reports (a lost host's are not waited for)."""
        self.link.stop()
        deadline = time.monotonic() + self.stop_timeout_s
        alive = {h for h, last in self.last_report.items() if time.monotonic() - last <= HOST_LOST_AFTER_S}
        while not alive <= self.final and time.monotonic() < deadline:
            time.sleep(REPORT_POLL_S)
            self.receive()
            alive = {h for h in alive if time.monotonic() - self.last_report[h] <= HOST_LOST_AFTER_S}
        self.receive()

    def reap(self) -> None:
        """The hosts' workers are theirs to reap."""


class DistributedRunner(Runner):
    """A ``Runner`` whose workers run on load hosts (see the module's docstring)."""

    def __init__(self, spec: WorkloadSpec, backend: Backend, *, run_id: str, link: HostLink,
                 shares: Mapping[str, Share], join_timeout_s: float = JOIN_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(spec, backend, run_id=run_id, **kwargs)
        self.shares = shares
        self.accounting.totals["e2e_negative"] = new_histogram()  # merged like the others
        self.supervisor = RemoteSupervisor(  # type: ignore[assignment]
            link=link, shares=shares, context=self.worker_ctx, on_message=self.accounting.apply,
            stop_timeout_s=self.supervisor.stop_timeout_s, join_timeout_s=join_timeout_s,
        )

    def _start(self) -> None:
        t0_ns = time.time_ns() + round(START_LEAD_S * 1e9)
        self.supervisor.start_at(t0_ns)  # type: ignore[attr-defined]
        time.sleep(max(0.0, (t0_ns - time.time_ns()) / 1e9))
        self.worker_ctx.t0_ns.value = t0_ns
        self.clock = _Clock(t0_ns, time.monotonic(), self.worker_ctx.window_ns())
        self.accounting.window_end_ns = self.clock.window_ns[1]
        self.accounting.t0_ns = t0_ns
        self.accounting.tally.last_progress = self.clock.t0

    def run(self) -> RunResult:
        result = super().run()
        supervisor: RemoteSupervisor = self.supervisor  # type: ignore[assignment]
        negative = self.accounting.totals["e2e_negative"]
        result.summary["negative_latencies"] = {
            "count": negative.get_total_count(), "max_ms": (percentiles_ms(negative) or {}).get("max"),
        }
        result.summary["hosts"] = {
            host: {"producers": list(share.producers), "consumers": list(share.consumers),
                   "clock_offset_ms": round(supervisor.offsets_s[host] * 1000, 3) if host in supervisor.offsets_s else None,
                   "e2e_histogram": supervisor.host_e2e.get(host, b"").decode("ascii")}
            for host, share in self.shares.items()
        }
        result.summary["coordinator_clock_offset_ms"] = round(supervisor.own_offset_s * 1000, 3)
        if supervisor.lost and result.error and result.error.startswith(supervisor.lost):
            result.error = (f"{result.error}; after the final drain the ledger counts {result.ledger.lost:,} event(s) "
                            f"lost of {result.ledger.events:,}")
            result.summary["error"] = result.error
        return result


# -- a host -----------------------------------------------------------------------------------

class ShareChannel(Protocol):
    """A host's transport to the coordinator (``experiments.hosts.distribution``)."""

    def joined(self, offset: ClockOffset) -> None:
        """The share's workers are ready; ``offset`` is this host's clock offset."""

    def start_signal(self) -> tuple[int, list[int]] | None:
        """(start time on the reference clock in ns, latency shifts by producer) once set."""

    def stopped(self) -> bool:
        """The coordinator told the hosts to stop (or the run ended)."""

    def report(self, report: HostReport) -> None: ...


class _Relay:
    """The host's worker messages, kept until the next report; its own e2e histogram."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.e2e = new_histogram()

    def __call__(self, message: Message) -> None:
        self.messages.append(message)
        encoded = message.encoded if isinstance(message, Histograms) else (
            message.histograms if isinstance(message, BatchReport) else None)
        if encoded and "e2e" in encoded:
            merge_encoded(self.e2e, encoded["e2e"])

    def take(self) -> list[Message]:
        taken, self.messages = self.messages, []
        return taken


def run_share(spec: WorkloadSpec, backend: Backend, *, queue: str, share: Share, channel: ShareChannel,
              offset: ClockOffset, mp_context: Any, report_s: float = REPORT_S) -> str:
    """Run this host's ``share`` of a distributed run to its end; what happened, in words."""
    relay = _Relay()
    context = WorkerContext(
        spec, backend, queue, None, SharedFlag(mp_context), SharedFlag(mp_context),  # type: ignore[arg-type]
        mp_context.Value("q", 0, lock=False), mp_context.Array("q", spec.producers, lock=False),
        latency_shift_ns=mp_context.Array("q", spec.producers, lock=False),
    )
    supervisor = Supervisor(mp_context=mp_context, context=context, threads=False, on_message=relay)
    seq, error = 0, None

    def report(final: bool = False) -> None:
        nonlocal seq
        seq += 1
        channel.report(HostReport(seq, relay.take(), {p: int(context.sent[p]) for p in share.producers},
                                  encode(relay.e2e) if relay.e2e.get_total_count() else b"",
                                  final, error))

    try:
        for index in share.consumers:
            supervisor.spawn(CONSUMER, index)
        for index in share.producers:
            supervisor.spawn(PRODUCER, index)
        supervisor.await_ready()
        channel.joined(offset)
        while (signal := channel.start_signal()) is None:
            if channel.stopped():
                return "stopped before the start"
            supervisor.check()
            time.sleep(0.05)
        start_ns, shifts = signal
        context.latency_shift_ns[:] = shifts
        t0_ns = start_ns - round(offset.offset_s * 1e9)
        context.t0_ns.value = t0_ns
        time.sleep(max(0.0, (t0_ns - time.time_ns()) / 1e9))
        context.start.set()
        next_report = time.monotonic() + report_s
        while True:
            supervisor.pump(0.005)
            supervisor.check()
            if time.monotonic() >= next_report:
                if channel.stopped():
                    break
                report()
                next_report += report_s
    except QueueError as exc:
        error = str(exc)
    finally:
        context.stop.set()
        context.start.set()
        supervisor.stop()
        supervisor.reap()
        report(final=True)
    return f"failed: {error}" if error else "done"
