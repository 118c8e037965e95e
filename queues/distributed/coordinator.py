"""The coordinator of a run split over load hosts.

The coordinator is an ordinary ``Runner`` given a ``RemoteSupervisor`` in place of its
``Supervisor`` and a start that waits for the hosts: instead of forking workers the supervisor
hands each host its share (``HostLink``, the transport, lives in ``experiments``), and instead of
reading the workers' pipes it reads the hosts' reports (``queues.distributed.reports``). A
report relays the host's worker messages (``queues.workers.reports``) unchanged but for their
times, which are moved onto the coordinator's clock; so the coordinator's
``Accounting`` merges them exactly as it merges local workers' messages: counters summed,
ledger indices united (duplicates across hosts are still duplicates), encoded HdrHistograms
added, never percentiles averaged. The samples, the drain and the summary are a single
machine's.

A host runs ``run_share`` (``queues.distributed.host``): its workers, forked as the local runner
forks them, wait at the start barrier until the coordinator sets one absolute start time (on the
reference clock, converted with each host's measured offset); then it reports every ``REPORT_S``
until told to stop.

Clocks: ``reference = local + offset`` for every machine (``queues.measurement.clocks``). A consumer on host
B measures an event of a producer on host A as ``received_B - intended_A``; the true latency is
that plus ``offset_B - offset_A`` (``latency_shifts``), applied per event by the consumer.
What comes out negative (an offset off by more than the latency) is counted, never dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from queues.backends import Backend
from queues.distributed.plan import Share, latency_shifts
from queues.distributed.reports import ShareReport, on_clock
from queues.errors import NotSupported, QueueError
from queues.measurement.histograms import new_histogram, percentiles_ms
from queues.run.result import RunResult
from queues.run.runner import Runner
from queues.workers.context import WorkerContext
from queues.workers.reports import PRODUCER, Done, Message, WorkerFailed
from queues.workers.supervision import Worker
from queues.workload.spec import WorkloadSpec

log = logging.getLogger(__name__)

#: A host whose reports stopped for this long is lost: the run fails naming it (within 3 s of
#: its last report, with the coordinator's polling).
HOST_LOST_AFTER_S = 2.0
REPORT_POLL_S = 0.1  # the coordinator reads new reports this often
START_LEAD_S = 0.5  # the start time is set this far ahead: every host must read it before
JOIN_TIMEOUT_S = 30.0  # every share must have its workers ready by then


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

    def __init__(
        self,
        *,
        link: HostLink,
        shares: Mapping[str, Share],
        context: WorkerContext,
        on_message: Callable[[Message], None],
        stop_timeout_s: float,
        join_timeout_s: float,
    ) -> None:
        self.link, self.shares, self.context, self.on_message = link, shares, context, on_message
        self.stop_timeout_s, self.join_timeout_s = stop_timeout_s, join_timeout_s
        self.workers: list[Worker] = []  # none here: they run on the hosts
        self.replaced, self.replace_after_s = 0, 0.0
        self.last_kill: float | None = None
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
                raise QueueError(
                    f"load host(s) {', '.join(missing)} did not join within {self.join_timeout_s:g} s "
                    "(their workers were not ready)"
                )
            time.sleep(REPORT_POLL_S)
        self.offsets_s = joined

    def start_at(self, t0_ns: int) -> None:
        """Start every host at ``t0_ns`` on this machine's clock."""
        offsets = {**self.offsets_s}
        self.link.start(
            t0_ns + round(self.own_offset_s * 1e9), latency_shifts(self.shares, offsets, len(self.context.sent))
        )
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
            report = ShareReport.decode(payload)
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
        """Stop every host and read their last reports. A host that was reporting when the stop
        began is waited for until its final report comes, or ``stop_timeout_s``: while it stops
        and reaps its workers it sends nothing, which on a loaded machine can last longer than
        ``HOST_LOST_AFTER_S`` (its consumers' last histograms, in that final report, were lost
        so). A host already lost is not waited for."""
        self.link.stop()
        deadline = time.monotonic() + self.stop_timeout_s
        alive = {h for h, last in self.last_report.items() if time.monotonic() - last <= HOST_LOST_AFTER_S}
        while not alive <= self.final and time.monotonic() < deadline:
            time.sleep(REPORT_POLL_S)
            self.receive()
        self.receive()

    def reap(self) -> None:
        """The hosts' workers are theirs to reap."""

    # a distributed run takes no faults (``plan_shares`` refuses them): nothing asks these
    def find(self, role: str, index: int) -> Worker:
        raise NotSupported(f"{role} {index} runs on a load host: no fault reaches it")

    def kill(self, worker: Worker, *, reason: str, replace_after_s: float | None = None) -> None:
        raise NotSupported("a worker on a load host cannot be killed from the coordinator")


class DistributedRunner:
    """A ``Runner`` whose workers run on load hosts (see the module's docstring). Call ``run()``
    once."""

    def __init__(
        self,
        spec: WorkloadSpec,
        backend: Backend,
        *,
        run_id: str,
        link: HostLink,
        shares: Mapping[str, Share],
        join_timeout_s: float = JOIN_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        """``kwargs``: the ``Runner``'s own (``on_sample``, ``should_cancel``, ...)."""
        self.link, self.shares, self.join_timeout_s = link, shares, join_timeout_s
        self.supervisor: RemoteSupervisor  # built by the runner, through ``_supervise``
        self.runner = Runner(spec, backend, run_id=run_id, supervise=self._supervise, start=self._start, **kwargs)
        self.runner.accounting.totals["e2e_negative"] = new_histogram()  # merged like the others

    def _supervise(
        self, context: WorkerContext, on_message: Callable[[Message], None], stop_timeout_s: float
    ) -> RemoteSupervisor:
        self.supervisor = RemoteSupervisor(
            link=self.link,
            shares=self.shares,
            context=context,
            on_message=on_message,
            stop_timeout_s=stop_timeout_s,
            join_timeout_s=self.join_timeout_s,
        )
        return self.supervisor

    def _start(self) -> int:
        """Every host starts at one time, ``START_LEAD_S`` ahead (each must read it before);
        returns it, once it has come."""
        t0_ns = time.time_ns() + round(START_LEAD_S * 1e9)
        self.supervisor.start_at(t0_ns)
        time.sleep(max(0.0, (t0_ns - time.time_ns()) / 1e9))
        return t0_ns

    def run(self) -> RunResult:
        result = self.runner.run()
        supervisor = self.supervisor
        negative = self.runner.accounting.totals["e2e_negative"]
        result.summary["negative_latencies"] = {
            "count": negative.get_total_count(),
            "max_ms": (percentiles_ms(negative) or {}).get("max"),
        }
        result.summary["hosts"] = {
            host: {
                "producers": list(share.producers),
                "consumers": list(share.consumers),
                "clock_offset_ms": round(supervisor.offsets_s[host] * 1000, 3)
                if host in supervisor.offsets_s
                else None,
                "e2e_histogram": supervisor.host_e2e.get(host, b"").decode("ascii"),
            }
            for host, share in self.shares.items()
        }
        result.summary["coordinator_clock_offset_ms"] = round(supervisor.own_offset_s * 1000, 3)
        if supervisor.lost and result.error and result.error.startswith(supervisor.lost):
            result.error = (
                f"{result.error}; after the final drain the ledger counts {result.ledger.lost:,} event(s) "
                f"lost of {result.ledger.events:,}"
            )
            result.summary["error"] = result.error
        return result
