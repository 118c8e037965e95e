"""A worker process lives only as long as its runner.

A runner killed with SIGKILL runs no cleanup: its forked workers would live on, blocked on a
report pipe nobody reads and holding server connections (and, for SQL consumers, open
transactions). Three things prevent it, set up at the start of every worker process:

- ``PR_SET_PDEATHSIG``: the kernel sends the worker SIGKILL when the runner dies (Linux, through
  ``prctl`` with ctypes). The runner may already be gone by then, so the parent pid is checked
  right after: a worker reparented to init exits at once.
- Where ``prctl`` is not available, a daemon thread watches ``os.getppid()`` and exits the
  process within ``WATCH_INTERVAL_S`` of the runner's death.
- The worker closes the read ends of the report pipes it inherited through fork (its own and
  earlier workers'): once the runner is gone nobody holds them, so a report gets EPIPE instead of
  blocking on a full pipe (``workers.RunnerGone``), and the worker ends.

A terminal's Ctrl-C reaches every process of the foreground group, workers included: workers
ignore SIGINT, so that the runner, which catches it, stops them in order instead of their dying
in the middle of a batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import threading
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_INTERVAL_S = 0.5
ORPHAN_EXIT_CODE = 70  # what a worker whose runner is gone exits with (EX_SOFTWARE)


def bind_to_runner(runner_pid: int, inherited: Iterable[Any] = ()) -> None:
    """Make this worker process die with ``runner_pid``, ignore SIGINT, and close the
    ``inherited`` connections (report pipe readers) it must not hold. Call first thing in a
    forked worker; never in a thread (signals belong to the main thread)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for connection in inherited:
        connection.close()
    if not _set_parent_death_signal(signal.SIGKILL):
        threading.Thread(target=_watch_parent, args=(runner_pid,), daemon=True, name="imq-lifeline").start()
    if os.getppid() != runner_pid:  # the runner died before the kernel was told
        os._exit(ORPHAN_EXIT_CODE)


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """For ``subprocess``'s ``preexec_fn``: the child gets ``signum`` when its parent dies
    (Linux; a no-op elsewhere). SIGTERM lets a run's executor cancel its run cleanly."""
    _set_parent_death_signal(signum)


def _set_parent_death_signal(signum: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, signum)``; False where there is no such call (not Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return False
    if prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
        return False
    return True


def _watch_parent(runner_pid: int) -> None:
    while os.getppid() == runner_pid:
        time.sleep(WATCH_INTERVAL_S)
    os._exit(ORPHAN_EXIT_CODE)
