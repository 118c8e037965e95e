"""Runs one experiment: starts producer and consumer workers, accounts, samples, and reports.

The runner owns the ledger and the merged histograms. It ends a run when every event has been
counted once (success), when the consumers have received nothing for ``idle_timeout_s`` after
the producers finished (what is missing is reported lost), when a worker fails or dies, or when
the caller cancels. Whatever ended it, the result holds every figure counted so far.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import wait
from typing import Any

import numpy as np

from queues import environment
from queues.backends import Backend
from queues.errors import NotSupported, QueueError
from queues.ledger import Ledger, LedgerResult
from queues.metrics import Sample, merge_encoded, new_histogram, percentiles_ms
from queues.workers import ReportChannel, SharedFlag, WorkerContext, run_worker
from queues.workload import WorkloadSpec

SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
DONE_JOIN_S = 1.0
STALL_LIMIT_S = 60.0  # no event sent or received for this long: the run fails instead of hanging
POLL_S = 0.005
KEEP_UP_RATIO = 0.99  # consumption within 1% of the offered rate
KEEP_UP_BACKLOG_S = 1.0  # and no more than a second of events waiting at the window's end
# histograms summarised over the measured window; the *_warmup ones only feed the samples
SUMMARY_HISTOGRAMS = ("e2e", "from_send", "send_delay", "publish")
INTERVAL_HISTOGRAMS = {"e2e": "e2e", "e2e_warmup": "e2e", "send_delay": "send_delay", "send_delay_warmup": "send_delay"}


@dataclass(frozen=True)
class Faults:
    """Faults to inject, for the fault experiments and the at-least-once tests.

    ``kill_consumer_after``: once that many events were reported, SIGKILL consumer 0 (mid-batch:
    it is busy) and start a replacement, as a supervisor would.
    """

    kill_consumer_after: int | None = None
    #: Malformed messages sent into the queue before the producers start.
    poison_messages: int = 0


@dataclass
class RunResult:
    run_id: str
    spec: WorkloadSpec
    status: str
    error: str | None
    summary: dict[str, Any]
    samples: list[Sample]
    environment: dict[str, Any]
    ledger: LedgerResult


@dataclass
class _Worker:
    role: str
    index: int
    handle: Any  # Process or Thread
    pid: int | None = None
    ready: bool = False
    done: bool = False
    killed: bool = False

    def dead(self) -> bool:
        if isinstance(self.handle, threading.Thread):
            return not self.handle.is_alive()
        return self.handle.exitcode is not None


@dataclass
class _Tally:
    """Counters the runner updates from worker reports."""

    poison: int = 0
    last_new_ns: int = 0
    last_progress: float = 0.0
    errors: list[str] = field(default_factory=list)
    receipts: list[tuple[int, int]] = field(default_factory=list)  # (received_ns, events) per report
    measured_sent: int = 0  # events of the measured window the producers sent
    last_send_ns: int = 0


class Runner:
    """One run of ``spec`` on ``backend``. Call ``run()`` once."""

    def __init__(
        self,
        spec: WorkloadSpec,
        backend: Backend,
        *,
        run_id: str,
        on_sample: Callable[[Sample], None] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        faults: Faults | None = None,
        sample_interval_s: float = 1.0,
        profile_dir: str | None = None,
    ) -> None:
        self.spec, self.backend, self.run_id = spec, backend, run_id
        self.on_sample, self.on_progress = on_sample, on_progress
        self.should_cancel = should_cancel or (lambda: False)
        self.faults = faults or Faults()
        self.sample_interval_s = sample_interval_s
        self.profile_dir = profile_dir
        self.queue = f"{backend.namespace}.{run_id}"
        self.ledger = Ledger(spec)
        self.tally = _Tally()
        self.totals = {name: new_histogram() for name in SUMMARY_HISTOGRAMS}
        self.interval = {name: new_histogram() for name in INTERVAL_HISTOGRAMS}
        self.samples: list[Sample] = []
        self.workers: list[_Worker] = []
        if self.faults.kill_consumer_after is not None and not backend.capabilities.processes:
            raise NotSupported(f"{backend.name} runs its workers as threads, which cannot be killed")

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run to the end. Raises ``BackendUnavailable`` only before anything was sent (the
        server is unreachable); every later failure is returned as a failed result."""
        self.backend.connect()
        try:
            self.backend.declare(self.queue)
            self.backend.purge(self.queue)
            backend_env = self.backend.environment()
            status, error = self._run_workers()
        finally:
            self._cleanup()
        return self._result(status, error, backend_env)

    def _run_workers(self) -> tuple[str, str | None]:
        self._ctx = multiprocessing.get_context("fork")
        threads = not self.backend.capabilities.processes
        self.readers: list[Any] = []  # one pipe per worker (see ReportChannel)
        self.start_event = threading.Event() if threads else SharedFlag(self._ctx)
        self.stop_event = threading.Event() if threads else SharedFlag(self._ctx)
        t0_ns = _Box(0) if threads else self._ctx.Value("q", 0, lock=False)
        sent = [0] * self.spec.producers if threads else self._ctx.Array("q", self.spec.producers, lock=False)
        self.worker_ctx = WorkerContext(
            self.spec, self.backend, self.queue, None, self.start_event, self.stop_event, t0_ns, sent,
            self.profile_dir,
        )
        try:
            for index in range(self.spec.consumers):
                self._spawn("consumer", index)
            for index in range(self.spec.producers):
                self._spawn("producer", index)
            self._await_ready()
            self._send_poison()
            self.t0_ns, self.t0 = time.time_ns(), time.monotonic()
            self.worker_ctx.t0_ns.value = self.t0_ns
            self.window_ns = self.worker_ctx.window_ns()
            self.tally.last_progress = self.t0
            self.start_event.set()
            return self._watch()
        except QueueError as exc:
            return FAILED, str(exc)
        finally:
            self.stop_event.set()
            self.start_event.set()  # release anyone still waiting to start
            self._stop_workers()
            if hasattr(self, "t0"):
                self._take_sample()  # the final, partial interval, while the queue still exists

    def _send_poison(self) -> None:
        if self.faults.poison_messages:
            producer = self.backend.producer(self.queue)
            try:
                producer.send_batch([b"not an imqueue event"] * self.faults.poison_messages)
            finally:
                producer.close()

    def _spawn(self, role: str, index: int) -> None:
        channel = ReportChannel(self._ctx)
        target_args = (role, index, replace(self.worker_ctx, channel=channel))
        if not self.backend.capabilities.processes:
            handle: Any = threading.Thread(target=run_worker, args=target_args, daemon=True, name=f"{role}-{index}")
        else:
            handle = self._ctx.Process(target=run_worker, args=target_args, daemon=True, name=f"imq-{role}-{index}")
        handle.start()
        if self.backend.capabilities.processes:
            channel.writer.close()  # the child has its copy; EOF then tells the runner it is gone
        self.readers.append(channel.reader)
        self.workers.append(_Worker(role, index, handle))

    def _await_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(w.ready for w in self.workers):
            self._drain_reports(0.05)
            self._check_workers()
            if time.monotonic() > deadline:
                raise QueueError(f"workers did not start within {READY_TIMEOUT_S:.0f} s")

    def _watch(self) -> tuple[str, str | None]:
        next_sample = self.t0 + self.sample_interval_s
        activity, last_activity = (0, 0), self.t0
        stall_limit_s = max(STALL_LIMIT_S, 3 * self.spec.idle_timeout_s)
        while True:
            self._drain_reports(POLL_S)
            self._check_workers()
            self._inject_faults()
            now = time.monotonic()
            if (current := (sum(self.worker_ctx.sent), self.ledger.received)) != activity:
                activity, last_activity = current, now
            elif now - last_activity > stall_limit_s:
                raise QueueError(
                    f"no event was sent or received for {stall_limit_s:.0f} s: the backend or a worker is stuck"
                )
            if now >= next_sample:
                self._take_sample()
                next_sample += self.sample_interval_s
            if self.on_progress:
                self.on_progress(self.ledger.unique, self.spec.events)
            producers_done = all(w.done for w in self.workers if w.role == "producer")
            if self.ledger.complete and producers_done:
                return SUCCEEDED, None
            if self.should_cancel():
                return CANCELLED, "cancelled by the user"
            if producers_done and now - self.tally.last_progress > self.spec.idle_timeout_s:
                return SUCCEEDED, None  # finished; the ledger's verdict says what was lost

    def _stop_workers(self) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and not all(w.done or w.killed or w.dead() for w in self.workers):
            self._drain_reports(0.02)
        self._drain_reports(0)
        for w in self.workers:
            # a worker that reported done has nothing left to say; one blocked on a full pipe
            # (an undrained in-memory queue after a cancel) must not hold the run up
            w.handle.join(timeout=DONE_JOIN_S if w.done else max(0.1, deadline - time.monotonic()))
            if not w.dead() and not isinstance(w.handle, threading.Thread):
                w.handle.kill()
                w.handle.join(timeout=2)
        self._drain_reports(0)

    def _cleanup(self) -> None:
        try:
            self.backend.delete(self.queue)
        except QueueError:
            pass  # the run's result says more; a queue left behind is named in the logs
        finally:
            self.backend.close()

    # -- reports ---------------------------------------------------------------------------

    def _drain_reports(self, timeout_s: float) -> None:
        ready = wait(self.readers, timeout_s)
        while ready:
            for reader in ready:
                try:
                    self._handle(reader.recv())
                except (EOFError, OSError):
                    self.readers.remove(reader)  # the worker is gone; its death is checked apart
            ready = wait(self.readers, 0) if self.readers else []

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "batch":
            _, _, flat, raw_sum, corrupt, poison, received_ns, hists = message
            indices = np.frombuffer(flat, dtype=np.uint32)
            if self.ledger.add_indices(indices, raw_sum, corrupt):
                self.tally.last_new_ns = max(self.tally.last_new_ns, received_ns)
            if self.spec.steady:
                self.tally.receipts.append((received_ns, len(indices)))
            self.tally.poison += poison
            self.tally.last_progress = time.monotonic()
            if hists:
                self._merge_histograms(hists)
        elif kind == "hists":
            self._merge_histograms(message[3])
        elif kind == "ready":
            worker = self._worker(message[1], message[2])
            worker.ready, worker.pid = True, message[3]
        elif kind == "done":
            self._worker(message[1], message[2]).done = True
            if message[1] == "producer":
                self.tally.measured_sent += message[3]["measured_sent"]
                self.tally.last_send_ns = max(self.tally.last_send_ns, message[3]["last_send_ns"])
        elif kind == "error":
            self.tally.errors.append(f"{message[1]} {message[2]}: {message[3]}")

    def _merge_histograms(self, encoded: dict[str, bytes]) -> None:
        for name, blob in encoded.items():
            if name in self.totals:
                merge_encoded(self.totals[name], blob)
            if name in INTERVAL_HISTOGRAMS:
                merge_encoded(self.interval[name], blob)

    def _worker(self, role: str, index: int) -> _Worker:
        return next(w for w in reversed(self.workers) if w.role == role and w.index == index)

    def _check_workers(self) -> None:
        if self.tally.errors:
            raise QueueError(self.tally.errors[0])
        for w in self.workers:
            if not w.done and not w.killed and w.dead():
                self._drain_reports(0)
                if self.tally.errors:
                    raise QueueError(self.tally.errors[0])
                code = getattr(w.handle, "exitcode", None)
                raise QueueError(f"{w.role} {w.index} died unexpectedly (exit code {code})")

    def _inject_faults(self) -> None:
        after = self.faults.kill_consumer_after
        if after is None or self.ledger.received < after:
            return
        victim = self.workers[0] if self.workers[0].role == "consumer" else None
        if victim is None or victim.killed:
            return
        os.kill(victim.pid, signal.SIGKILL)
        victim.killed = True
        victim.handle.join(timeout=5)
        self._spawn("consumer", self.spec.consumers)  # the supervisor's replacement

    # -- figures ---------------------------------------------------------------------------

    def _take_sample(self) -> None:
        produced = sum(self.worker_ctx.sent)
        consumed = self.ledger.received
        elapsed = time.monotonic() - self.t0
        previous = self.samples[-1] if self.samples else None
        span = elapsed - (previous.t_s if previous else 0.0)
        sample = Sample(
            t_s=round(elapsed, 3),
            produced=produced,
            consumed=consumed,
            unique=self.ledger.unique,
            produce_eps=round((produced - (previous.produced if previous else 0)) / span, 1) if span else 0.0,
            consume_eps=round((consumed - (previous.consumed if previous else 0)) / span, 1) if span else 0.0,
            depth=self._depth(),
            backlog=produced - consumed,
            latency_ms=percentiles_ms(self._interval("e2e")),
            offered_eps=self._offered_eps(elapsed - span, elapsed),
            send_delay_p99_ms=(percentiles_ms(self._interval("send_delay")) or {}).get("p99"),
        )
        self.interval = {name: new_histogram() for name in INTERVAL_HISTOGRAMS}
        self.samples.append(sample)
        if self.on_sample:
            self.on_sample(sample)

    def _interval(self, family: str) -> Any:
        """The interval's histogram of ``family``, warm-up events included."""
        merged = new_histogram()
        for name, fam in INTERVAL_HISTOGRAMS.items():
            if fam == family:
                merged.add(self.interval[name])
        return merged

    def _offered_eps(self, begin_s: float, end_s: float) -> float | None:
        """The schedule's rate over ``[begin_s, end_s]`` (zero once the schedule is over)."""
        spec = self.spec
        if not spec.steady or end_s <= begin_s:
            return None
        overlap = max(0.0, min(end_s, spec.warmup_s + spec.duration_s) - begin_s)
        return round(spec.rate_eps * overlap / (end_s - begin_s), 1)

    def _consume_eps(self) -> float:
        """Events received per second over the measured window shifted by the median latency:
        the events the window offered arrive that much later, and a window of receipt times
        that is not shifted would miss the last ones and count warm-up ones in their place."""
        median = (percentiles_ms(self.totals["e2e"]) or {}).get("p50", 0.0)
        begin, end = (int(t + median * 1e6) for t in self.window_ns)
        received = sum(n for at, n in self.tally.receipts if begin <= at < end)
        return received / self.spec.duration_s

    def _steady_figures(self, ledger: LedgerResult) -> dict[str, Any]:
        """What a steady run adds to the summary (see the README's JSON table)."""
        spec, tally = self.spec, self.tally
        window_start, window_end = self.window_ns
        send_span_s = max(spec.duration_s, (tally.last_send_ns - window_start) / 1e9)
        send_eps = tally.measured_sent / send_span_s
        consume_eps = self._consume_eps()
        at_end = [x for x in self.samples if x.t_s <= (window_end - self.t0_ns) / 1e9 + 0.5]
        backlog_end = max(at_end[-1].backlog, at_end[-1].depth or 0) if at_end else 0
        kept_up = consume_eps >= KEEP_UP_RATIO * spec.rate_eps and backlog_end <= spec.rate_eps * KEEP_UP_BACKLOG_S
        delay = percentiles_ms(self.totals["send_delay"]) or {}
        warnings = []
        if send_eps < KEEP_UP_RATIO * spec.rate_eps:
            warnings.append(
                f"the producers sent {send_eps:,.0f} events/s, below the offered {spec.rate_eps:,.0f}: "
                "the engine or the backend's send path could not keep the rate, so these figures "
                "describe a lower load (events were sent late; see send_delay_ms)"
            )
        return {
            "rate_eps": spec.rate_eps,
            "duration_window_s": spec.duration_s,
            "warmup_s": spec.warmup_s,
            "arrival": spec.arrival,
            "send_eps": round(send_eps, 1),
            "consume_eps": round(consume_eps, 1),
            "rate_error": round(send_eps / spec.rate_eps - 1, 5),
            "kept_up": bool(kept_up),
            "backlog_at_window_end": backlog_end,
            "send_delay_ms": {k: delay.get(k) for k in ("p50", "p99", "max")},
            "drain_s": round(max(0.0, (tally.last_new_ns - tally.last_send_ns) / 1e9), 6),
            "warnings": warnings,
        }

    def _depth(self) -> int | None:
        if not self.backend.capabilities.depth:
            return None
        try:
            return self.backend.depth(self.queue)
        except QueueError:
            return None

    def _result(self, status: str, error: str | None, backend_env: dict[str, Any]) -> RunResult:
        ledger = self.ledger.result()
        drain_s = max(0.0, (self.tally.last_new_ns - getattr(self, "t0_ns", 0)) / 1e9) if ledger.unique else 0.0
        summary = summarise(
            run_id=self.run_id, spec=self.spec, status=status, error=error, ledger=ledger, drain_s=drain_s,
            latency=self.totals["e2e"], latency_from_send=self.totals["from_send"], publish=self.totals["publish"],
            poison=self.tally.poison, killed=sum(1 for w in self.workers if w.killed),
        )
        if self.spec.steady and hasattr(self, "t0_ns"):
            summary.update(self._steady_figures(ledger))
        env = environment.collect(backend_env)
        env["capabilities"] = self.backend.capabilities.as_dict()
        return RunResult(self.run_id, self.spec, status, error, summary, self.samples, env, ledger)


class _Box:
    """A ``.value`` holder for thread workers (processes use a shared ``multiprocessing.Value``)."""

    def __init__(self, value: int) -> None:
        self.value = value


def summarise(
    *,
    run_id: str,
    spec: WorkloadSpec,
    status: str,
    error: str | None,
    ledger: LedgerResult,
    drain_s: float,
    latency: Any,
    latency_from_send: Any,
    publish: Any | None,
    poison: int,
    killed: int,
) -> dict[str, Any]:
    """The run's summary: the JSON contract of ``runexperiment --json`` (see the README)."""
    return {
        "run_id": run_id,
        "status": status,
        "error": error,
        "backend": spec.backend,
        "events": spec.events,
        "producers": spec.producers,
        "consumers": spec.consumers,
        "events_per_message": spec.events_per_message,
        "batch": spec.batch,
        "duration_s": round(drain_s, 6),
        "throughput_eps": round(ledger.unique / drain_s, 1) if drain_s > 0 else 0.0,
        "sum": ledger.raw_sum,
        "unique_sum": ledger.unique_sum,
        "expected_sum": ledger.expected_sum,
        "received": ledger.received,
        "unique": ledger.unique,
        "duplicates": ledger.duplicates,
        "lost": ledger.lost,
        "corrupt": ledger.corrupt,
        "poison": poison,
        "verdict": ledger.verdict,
        "latency_ms": percentiles_ms(latency),
        "latency_from_send_ms": percentiles_ms(latency_from_send),
        "publish_ms": percentiles_ms(publish) if publish is not None else None,
        "killed_consumers": killed,
    }
