"""Supervision of one run's workers: spawn, the ready barrier, liveness, kill, replace, stop.

Workers are forked processes, or threads of this process for a backend whose queue cannot be
shared between processes (``not capabilities.processes``). Each has its own report pipe
(``ReportChannel``); ``receive`` reads whatever arrived, notes the messages about the workers'
state and hands every message to ``on_message`` (the accounting).

A worker process killed by a signal, by a fault of the run or from outside it (a user's
``kill``, the OOM killer), is replaced ``replace_after_s`` later, as systemd or Kubernetes would
restart it: a consumer by a new consumer, a producer by one that resumes its share. A worker
that fails (raises) or exits on its own still fails the run.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from typing import Any

from queues.errors import QueueError
from queues.workers.channel import ReportChannel, receive
from queues.workers.context import WorkerContext
from queues.workers.entry import run_worker, run_worker_process
from queues.workers.reports import CONSUMER, PRODUCER, Done, Message, Ready, WorkerFailed

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
DONE_JOIN_S = 1.0
KILL_JOIN_S = 5.0
# A report pipe this large holds about 250 reports of a full 1000-event batch (25 ms of a burst
# at 1e7 events/s), so a consumer never waits for the runner's nap between reads (see ``pump``).
REPORT_PIPE_BYTES = 1 << 20
#: Replacements one run may start; past this a worker that keeps dying fails the run instead
#: of being restarted for ever.
MAX_REPLACEMENTS = 50
#: The kill reason of a worker that died by a signal nobody in the run sent (a user, the OOM killer).
KILLED_FROM_OUTSIDE = "killed from outside the run by"


@dataclass
class Worker:
    role: str
    index: int
    handle: Any  # Process or Thread
    pid: int | None = None
    ready: bool = False
    done: bool = False
    killed: bool = False
    kill_reason: str | None = None  # why the runner killed it (a fault, hung past the stop timeout)

    def dead(self) -> bool:
        if isinstance(self.handle, threading.Thread):
            return not self.handle.is_alive()
        return self.handle.exitcode is not None

    def exit_code(self) -> int | None:
        return None if isinstance(self.handle, threading.Thread) else self.handle.exitcode


class Supervisor:
    """The workers of one run. ``context`` is what every worker inherits (its channel is
    replaced by each worker's own); ``threads`` runs them as threads instead of processes."""

    def __init__(
        self,
        *,
        mp_context: Any,
        context: WorkerContext,
        threads: bool,
        on_message: Callable[[Message], None],
        on_kill: Callable[[Worker], None] | None = None,
        on_replace: Callable[[Worker, Worker], None] | None = None,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        replace_after_s: float = 1.0,
    ) -> None:
        self.mp_context, self.context, self.threads = mp_context, context, threads
        self.on_message = on_message
        self.on_kill = on_kill  # told of every worker killed, once it is gone
        self.on_replace = on_replace  # told (dead, replacement) when a replacement starts
        self.stop_timeout_s = stop_timeout_s
        self.replace_after_s = replace_after_s
        self.replacements: list[tuple[float, Worker]] = []  # (when, the dead worker), due in order
        self.replaced = 0
        self.stopping = False
        self.last_kill: float | None = None  # time.monotonic() of the latest kill
        self.workers: list[Worker] = []
        self.failures: list[WorkerFailed] = []
        self._readers: list[Any] = []  # one pipe per worker, closed ones removed
        self.roomy_pipes = True  # every report pipe holds REPORT_PIPE_BYTES: read them in batches

    # -- workers ---------------------------------------------------------------------------

    def spawn(self, role: str, index: int) -> Worker:
        channel = ReportChannel(self.mp_context)
        self.roomy_pipes = _enlarge_pipe(channel.reader) and self.roomy_pipes
        args = (role, index, replace(self.context, channel=channel))
        if self.threads:
            handle: Any = threading.Thread(target=run_worker, args=args, daemon=True, name=f"{role}-{index}")
        else:
            # the child closes its copies of every report pipe reader (see queues.workers.lifeline)
            inherited = [*self._readers, channel.reader]
            handle = self.mp_context.Process(
                target=run_worker_process, args=(*args, os.getpid(), inherited), daemon=True, name=f"imq-{role}-{index}"
            )
        handle.start()
        if not self.threads:
            channel.writer.close()  # the child has its copy; EOF then tells the runner it is gone
        self._readers.append(channel.reader)
        worker = Worker(role, index, handle)
        self.workers.append(worker)
        return worker

    def kill(self, worker: Worker, *, reason: str, replace_after_s: float | None = None) -> None:
        """SIGKILL ``worker`` (a process), wait for it to be gone and have it replaced after
        ``replace_after_s`` (the supervisor's delay by default); ``reason`` is reported."""
        if self.threads or worker.pid is None:
            raise QueueError(f"{worker.role} {worker.index} cannot be killed: it is not a running process")
        self._kill_process(worker, reason)
        self._replace_later(worker, self.replace_after_s if replace_after_s is None else replace_after_s)

    def _replace_later(self, worker: Worker, delay_s: float) -> None:
        if self.stopping:
            return
        if self.replaced + len(self.replacements) >= MAX_REPLACEMENTS:
            raise QueueError(f"{MAX_REPLACEMENTS} workers were killed and replaced in this run: giving up")
        self.replacements.append((time.monotonic() + delay_s, worker))

    def start_replacements(self) -> None:
        """Start the replacements that are due: a consumer under a new index, a producer under
        its own (its share; it resumes after what was sent)."""
        now = time.monotonic()
        while self.replacements and self.replacements[0][0] <= now and not self.stopping:
            _, dead = self.replacements.pop(0)
            index = dead.index if dead.role == PRODUCER else len(self.consumers())
            replacement = self.spawn(dead.role, index)
            self.replaced += 1
            log.warning("%s %d replaced by %s %d", dead.role, dead.index, replacement.role, replacement.index)
            if self.on_replace:
                self.on_replace(dead, replacement)

    def _kill_process(self, worker: Worker, reason: str, join_s: float = KILL_JOIN_S) -> None:
        log.warning("killing %s %d (pid %s): %s", worker.role, worker.index, worker.pid, reason)
        worker.handle.kill()  # SIGKILL
        worker.handle.join(timeout=join_s)
        self._killed(worker, reason)

    def _killed(self, worker: Worker, reason: str) -> None:
        worker.killed, worker.kill_reason = True, reason
        self.last_kill = time.monotonic()
        if self.on_kill:
            self.on_kill(worker)

    def find(self, role: str, index: int) -> Worker:
        """The latest worker started as ``role`` ``index`` (a replacement reuses no index)."""
        return next(w for w in reversed(self.workers) if w.role == role and w.index == index)

    def consumers(self) -> list[Worker]:
        return [w for w in self.workers if w.role == CONSUMER]

    def producers_done(self) -> bool:
        """Every producer's share sent: the latest worker of each producer index is done (a
        killed one's replacement, pending or running, is not yet)."""
        latest = {w.index: w for w in self.workers if w.role == PRODUCER}
        return all(w.done for w in latest.values())

    def killed(self) -> list[Worker]:
        """The workers the runner killed, in the order they were started."""
        return [w for w in self.workers if w.killed]

    # -- reports ---------------------------------------------------------------------------

    def pump(self, poll_s: float) -> None:
        """One turn of the watch loop's reading: nap ``poll_s``, then handle everything that came.

        Reports are read in batches. Waking for each one (a thousand a second in a burst)
        preempted the consumer that had just sent it: on two cores the drain time took the
        runner's work as well as the consumer's, and the consumer waited in its report writes.
        Where a pipe could not be enlarged (64 KB fill in a millisecond of a burst), wake per report.
        """
        if self.roomy_pipes:
            time.sleep(poll_s)
            self.receive(0)
        else:
            self.receive(poll_s)

    def receive(self, timeout_s: float) -> None:
        """Handle every message that arrives within ``timeout_s`` (none waited for if 0)."""
        ready = wait(self._readers, timeout_s)
        while ready:
            for reader in ready:
                try:
                    message = receive(reader)
                except (EOFError, OSError):
                    self._readers.remove(reader)  # the worker is gone; its death is checked apart
                    continue
                self._note(message)
                self.on_message(message)
            ready = wait(self._readers, 0) if self._readers else []

    def _note(self, message: Message) -> None:
        match message:
            case Ready(role=role, index=index, pid=pid):
                worker = self.find(role, index)
                worker.ready, worker.pid = True, pid
            case Done(role=role, index=index):
                self.find(role, index).done = True
            case WorkerFailed():
                log.error("%s failed: %s", f"{message.role} {message.index}", message.detail)
                self.failures.append(message)

    # -- barriers and checks ---------------------------------------------------------------

    def await_ready(self) -> None:
        """Wait until every worker said it is ready; raises ``QueueError`` when one failed,
        died, or they took longer than ``READY_TIMEOUT_S``."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(w.ready for w in self.workers):
            self.receive(0.05)
            self.check()
            if time.monotonic() > deadline:
                raise QueueError(f"workers did not start within {READY_TIMEOUT_S:.0f} s")

    def check(self) -> None:
        """Raise ``QueueError`` if a worker reported a failure or ended without a word (not
        killed, not done). A worker killed by a signal from outside the run is noted as
        killed and replaced, as one killed by a fault is."""
        if self.failures:
            raise QueueError(self.failures[0].describe())
        for w in self.workers:
            if not w.done and not w.killed and w.dead():
                self.receive(0)  # its last words may still be in the pipe
                if self.failures:
                    raise QueueError(self.failures[0].describe())
                if w.done:
                    continue  # it said so just before it ended
                code = w.exit_code()
                if code is not None and code < 0 and not self.stopping:
                    name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
                    log.warning("%s %d (pid %s) was %s %s", w.role, w.index, w.pid, KILLED_FROM_OUTSIDE, name)
                    self._killed(w, f"{KILLED_FROM_OUTSIDE} {name}")
                    self._replace_later(w, self.replace_after_s)
                    continue
                log.error("%s %d died unexpectedly (exit code %s)", w.role, w.index, code)
                raise QueueError(f"{w.role} {w.index} died unexpectedly (exit code {code})")
        self.start_replacements()

    def stop(self) -> None:
        """Wait up to ``stop_timeout_s`` for the workers to finish (the stop flag must already
        be set), reading their last reports; then SIGKILL any process still there (a hung or
        SIGSTOPped worker): closing its connections makes the server release what it held."""
        self.stopping = True
        self.replacements.clear()  # nothing is started any more
        deadline = time.monotonic() + self.stop_timeout_s
        while time.monotonic() < deadline and not all(w.done or w.killed or w.dead() for w in self.workers):
            self.receive(0.02)
        self.receive(0)
        for w in self.workers:
            if w.done or w.killed:
                continue  # nothing left to say; ``reap`` sees it exit (after the final drain)
            w.handle.join(timeout=max(0.1, deadline - time.monotonic()))
            if not w.dead() and not self.threads:
                self._kill_process(w, f"hung past the stop timeout ({self.stop_timeout_s:g} s)", join_s=2)
        self.receive(0)

    def reap(self) -> None:
        """Wait up to ``DONE_JOIN_S`` for the workers that reported done to exit, and kill any
        still there. Called after the final drain: a ``memory-mp`` producer can only exit once
        its queue's pipe was read (its feeder thread flushes on exit), so killing it before the
        drain would throw away events it had sent."""
        deadline = time.monotonic() + DONE_JOIN_S
        for w in self.workers:
            if w.killed or self.threads:
                continue
            w.handle.join(timeout=max(0.0, deadline - time.monotonic()))
            if not w.dead():
                self._kill_process(w, f"did not exit within {DONE_JOIN_S:g} s of the final drain", join_s=2)
        self.receive(0)


def _enlarge_pipe(conn: Any) -> bool:
    """Give ``conn``'s pipe ``REPORT_PIPE_BYTES`` of room; False where the OS will not (only
    Linux has ``F_SETPIPE_SZ``; an unprivileged user past its pipe quota gets EPERM)."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is None:
        return False
    try:
        return fcntl.fcntl(conn.fileno(), set_size, REPORT_PIPE_BYTES) >= REPORT_PIPE_BYTES
    except OSError:
        return False
