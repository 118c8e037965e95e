"""Processes read from ``/proc`` (Linux): whether a pid is still the process it was, and the
live members of a process group, which a private server (``queues.faults.servers``) leads.

Zombies do not count as alive: a container's init may never reap them, so ``kill(pid, 0)``
and ``killpg(pgid, 0)``, which succeed on a zombie, would wait for them forever.
"""

from __future__ import annotations

import logging
import os
import signal
import time

log = logging.getLogger(__name__)

#: Longest the processes of a killed group may take to be gone.
EXIT_TIMEOUT_S = 10.0
POLL_S = 0.02


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name: state, ppid, pgrp, ...; ``None`` if gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()
    except OSError:
        return None


def process_start_time(pid: int) -> str:
    """When ``pid`` started, in clock ticks since boot (``""`` if unknown): with the pid, an
    identity no later process can share."""
    fields = _stat_fields(pid)
    return fields[19] if fields else ""


def process_alive(pid: int, start_time: str = "", *, started_by: float | None = None) -> bool:
    """Whether ``pid`` runs (a zombie does not), and is the one started at ``start_time``
    (``process_start_time``), or one started by ``started_by`` (a Unix time: a process started
    later reused the pid)."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z" or (start_time and fields[19] != start_time):
        return False
    return started_by is None or _started_at(fields) <= started_by


def _started_at(fields: list[str]) -> float:
    """The start of the process of ``fields`` (``_stat_fields``), as a Unix time."""
    with open("/proc/stat", encoding="ascii") as stat:
        boot_s = next(float(line.split()[1]) for line in stat if line.startswith("btime "))
    return boot_s + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``. Read from ``/proc``:
    ``killpg(pgid, 0)`` also counts zombies, which a container's init may never reap."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) and fields[0] != "Z" and fields[2] == str(pgid):
            members.append(int(entry))
    return members


def kill_group(pgid: int) -> None:
    """SIGKILL every process of group ``pgid`` and wait (at most ``EXIT_TIMEOUT_S``) until none
    is left: the next server on the same data must not meet the last one's processes."""
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    while group_members(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if time.monotonic() >= deadline:
            log.warning("process group %d outlived SIGKILL for %g s", pgid, EXIT_TIMEOUT_S)
            return
        time.sleep(POLL_S)
