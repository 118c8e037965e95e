"""The registry imports backend modules one at a time, whatever the thread.

``listbackends`` and the admin's backend list resolve every backend from a thread of its own, all
at once. Two threads importing at once can deadlock in Python's per-module import locks: one
imports ``pika.exceptions`` (holding its lock, then asking for ``pika``'s), the other ``pika``
(holding its lock, whose ``__init__`` asks for ``pika.exceptions``'s): ``_DeadlockError``.
Imports that never overlap cannot.

Deterministic, not a hope of hitting that race: each of two stand-in backend modules, once its
import began, waits until the other thread has either begun importing the other module (the
imports overlap: what must not happen) or asked the registry for it and waits its turn."""

from __future__ import annotations

import sys
import threading
import types

import queues.backends as registry
from queues.backends import BACKENDS, backend_class

#: How long a module waits for the other thread; a safety net, never reached when it works.
PATIENCE_S = 60.0
NAMES = ("A", "B")
MODULE = """
import imqtest_race_sync as sync

sync.began({name!r})


class Backend{name}:
    pass


sync.ended({name!r})
"""


class _Rendezvous:
    """What the two modules and the registry's lock tell each other."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.importing: set[str] = set()
        self.overlapped: set[str] = set()
        self.asked = 0  # how many times a thread entered the registry's import lock
        self.timed_out: list[str] = []

    def began(self, name: str) -> None:
        with self.changed:
            self.importing.add(name)
            if len(self.importing) > 1:
                self.overlapped.update(self.importing)
            self.changed.notify_all()
            if not self.changed.wait_for(lambda: self.overlapped or self.asked > 1, timeout=PATIENCE_S):
                self.timed_out.append(name)

    def ended(self, name: str) -> None:
        with self.changed:
            self.importing.discard(name)
            self.changed.notify_all()


class _CountingLock:
    """The registry's lock, counting the threads that ask for it."""

    def __init__(self, rendezvous: _Rendezvous) -> None:
        self.lock, self.rendezvous = threading.RLock(), rendezvous

    def __enter__(self) -> None:
        with self.rendezvous.changed:
            self.rendezvous.asked += 1
            self.rendezvous.changed.notify_all()
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_two_threads_never_import_backend_modules_at_once(tmp_path, monkeypatch):
    rendezvous = _Rendezvous()
    sync = types.ModuleType("imqtest_race_sync")
    sync.began, sync.ended = rendezvous.began, rendezvous.ended  # type: ignore[attr-defined]
    for name in NAMES:
        (tmp_path / f"imqtest_race_{name}.py").write_text(MODULE.format(name=name))
        monkeypatch.setitem(BACKENDS, f"race-{name}", f"imqtest_race_{name}.Backend{name}")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "imqtest_race_sync", sync)
    # raising=False: a registry without the lock has nothing to replace (and the test fails)
    monkeypatch.setattr(registry, "_IMPORT_LOCK", _CountingLock(rendezvous), raising=False)
    found: dict[str, str] = {}

    def resolve(alias: str) -> None:
        found[alias] = backend_class(alias).__name__

    threads = [threading.Thread(target=resolve, args=(f"race-{name}",)) for name in NAMES]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=2 * PATIENCE_S)
    finally:
        for name in NAMES:
            sys.modules.pop(f"imqtest_race_{name}", None)
    assert found == {f"race-{name}": f"Backend{name}" for name in NAMES}
    assert not rendezvous.overlapped, "two backend modules were imported at once"
    assert not rendezvous.timed_out
