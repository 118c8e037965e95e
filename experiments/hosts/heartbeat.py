"""Load hosts: each writes its own heartbeat row (``Host``), with its measured clock offset.

A load host is a ``qcluster`` started with ``IMQ_HOST_NAME=<name>`` (settings: its cluster takes
tasks from the queue ``imq-host-<name>``). Its main process runs ``HostBeat``, a daemon thread
started when the app is ready (``ExperimentsConfig.ready``), which writes the row every
``IMQ_HOST_BEAT_S`` and measures the clock offset at join and every ``IMQ_HOST_CLOCK_EVERY_S``.

Why a thread and not a django-q2 schedule: a schedule fires at most once a minute and takes a
worker slot, which a host's one worker needs for a run's share; a heartbeat must keep coming
while that share runs, and must stop the moment the host dies, which a thread of the cluster's
main process does (a SIGKILLed cluster writes nothing more). The cluster forks its Sentinel
after the thread started: ``os.register_at_fork`` makes a fork wait for a heartbeat in
progress, so that no child inherits the thread's database work half done.

The reference clock is the database's (``clock_timestamp()``, ``NOW(6)``, SQLite's
``julianday('now')``): every host and the coordinator reach it, and it is one clock for all.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from experiments.models import Host
from queues.measurement.clocks import ClockOffset, measure

log = logging.getLogger(__name__)

#: (SQL giving the database's clock in seconds since the epoch, its resolution in seconds)
REFERENCE_CLOCKS = {
    "postgresql": ("SELECT EXTRACT(EPOCH FROM clock_timestamp())", 1e-6),
    "mysql": ("SELECT UNIX_TIMESTAMP(NOW(6))", 1e-6),
    "sqlite": ("SELECT (julianday('now') - 2440587.5) * 86400.0", 1e-3),
}


def host_queue(name: str) -> str:
    """The django-q2 cluster (broker queue) of host ``name``."""
    return settings.IMQ_HOST_QUEUE_PREFIX + name


def local_clock_s() -> float:
    """This machine's clock as the offset measurement reads it: ``time.time``, shifted by the
    test-only ``IMQ_CLOCK_SKEW_S`` unless this process's clock already is (``clock_skew_install``)."""
    return time.time() + (0.0 if _skew_installed else settings.IMQ_CLOCK_SKEW_S)


_skew_installed = False


def clock_skew_install() -> float:
    """Tests only: make this process's wall clock read ``IMQ_CLOCK_SKEW_S`` seconds off, as a
    machine whose clock is really off reads it; the skew installed (0: nothing done).

    ``time.time`` and ``time.time_ns`` are replaced in the ``time`` module, which the workers read
    as ``time.time_ns()`` at every event: the processes this one forks afterwards (a share's
    workers) stamp their events on the skewed clock, and the offset measured here sees the same
    skew. ``time.monotonic`` and ``datetime.now`` are left alone (durations stay true; Django's
    and the database's timestamps are not what a run's latencies are made of). Called by
    ``manage.py hostshare`` only, and a no-op unless the setting is non-zero: production never
    sets it. The heartbeat (in the host's ``qcluster``, whose django-q2 signing reads
    ``time.time``) keeps its clock true and adds the skew to its measurement instead.
    """
    global _skew_installed
    skew_s = settings.IMQ_CLOCK_SKEW_S
    if _skew_installed or not skew_s:
        return skew_s
    skew_ns = round(skew_s * 1e9)
    true_time, true_time_ns = time.time, time.time_ns
    time.time = lambda: true_time() + skew_s  # type: ignore[assignment]
    time.time_ns = lambda: true_time_ns() + skew_ns  # type: ignore[assignment]
    _skew_installed = True
    log.warning("IMQ_CLOCK_SKEW_S: this process's wall clock reads %+.3f s off (a test setting)", skew_s)
    return skew_s


def database_clock_s() -> float:
    sql, _ = REFERENCE_CLOCKS[connection.vendor]
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return float(cursor.fetchone()[0])


def clock_offset_measure() -> ClockOffset:
    """This machine's offset to the database's clock (``database = local + offset``)."""
    connection.ensure_connection()  # the first exchange must not pay for the connect
    _, resolution_s = REFERENCE_CLOCKS[connection.vendor]
    return measure(local_clock_s, database_clock_s, resolution_s=resolution_s)


def host_beat(*, name: str, offset: ClockOffset | None = None, busy: int | None = None) -> Host:
    """Write host ``name``'s heartbeat (this process), with a fresh clock ``offset`` if given."""
    now = timezone.now()
    values: dict = {
        "queue": host_queue(name),
        "machine": socket.gethostname(),
        "pid": os.getpid(),
        "cpus": os.cpu_count() or 1,
        "workers": settings.Q_CLUSTER["workers"],
        "last_seen": now,
    }
    if busy is not None:
        values["busy"] = busy
    if offset is not None:
        values.update(
            clock_offset_s=offset.offset_s,
            clock_uncertainty_s=offset.uncertainty_s,
            clock_measured_at=now,
            clock_reference=f"database ({connection.vendor})",
        )
    with transaction.atomic():
        before = Host.objects.filter(name=name).values_list("pid", flat=True).first()
        if before != os.getpid():  # a host (re)started: it runs no share yet
            values.update(started_at=now, busy=busy or 0)
        host, _ = Host.objects.update_or_create(name=name, defaults=values)
    return host


def hosts_alive(*, names: list[str] | None = None) -> list[Host]:
    """The hosts whose heartbeat is fresh (within ``IMQ_HOST_ALIVE_S``), by name."""
    hosts = Host.objects.filter(last_seen__gte=timezone.now() - timedelta(seconds=settings.IMQ_HOST_ALIVE_S))
    if names is not None:
        hosts = hosts.filter(name__in=names)
    return list(hosts)


class HostBeat(threading.Thread):
    """The heartbeat thread of a load host's cluster (see the module's docstring)."""

    lock = threading.Lock()  # held during a beat; a fork waits for it

    def __init__(self, name: str) -> None:
        super().__init__(daemon=True, name="imq-host-beat")
        self.host_name = name
        self.next_clock = 0.0

    def run(self) -> None:
        while True:
            try:
                with self.lock:
                    self.beat()
            except Exception:  # noqa: BLE001 - a database that blinks must not end the heartbeat
                log.exception("host %s: heartbeat failed; trying again", self.host_name)
            finally:
                connection.close()  # a fresh connection a beat: nothing held between beats
            time.sleep(settings.IMQ_HOST_BEAT_S)

    def beat(self) -> None:
        offset = None
        if time.monotonic() >= self.next_clock:
            offset = clock_offset_measure()
            self.next_clock = time.monotonic() + settings.IMQ_HOST_CLOCK_EVERY_S
        host_beat(name=self.host_name, offset=offset)


def host_beat_start() -> HostBeat | None:
    """Start this process's heartbeat thread if it is a load host's ``qcluster``; once."""
    if not settings.IMQ_HOST_NAME or getattr(host_beat_start, "started", None):
        return None
    beat = HostBeat(settings.IMQ_HOST_NAME)
    os.register_at_fork(
        before=HostBeat.lock.acquire, after_in_parent=HostBeat.lock.release, after_in_child=_release_in_child
    )
    host_beat_start.started = beat  # type: ignore[attr-defined]
    beat.start()
    return beat


def _release_in_child() -> None:
    if HostBeat.lock.locked():
        HostBeat.lock.release()
