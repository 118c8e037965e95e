"""Private server instances, for the ``restart-server`` fault: a server of the run's own, which
it may crash and start again, never the shared one.

``private_server(alias)`` gives the server a backend alias needs (``redis-list`` and
``redis-stream`` -> ``RedisServer``, ``postgres`` -> ``PostgresServer``, ``mysql`` ->
``MariaDBServer``); ``url`` is what that backend connects with. ``restart`` SIGKILLs the server's
whole process group, as a power cut would, and starts it again on the same port and data
directory: what survives is what its ``persistence`` wrote to disk (``durable``).

Every instance lives in a temporary directory ``<tmp>/imq-server-*`` holding its data, its log
(``server.log``) and two pid files: ``owner.pid`` (the process that started it, with its start
time, so that a reused pid is not mistaken for it) and ``server.pid`` (the server's process
group). The server is a direct child of its owner, started in a session of its own with
``PR_SET_PDEATHSIG`` (``lifeline.die_with_parent``), so it dies with its owner even on SIGKILL.
The signal goes when the *thread* that started the server ends, so start it from a thread that
outlives the run (the runner's main thread). ``stale_private_servers_cleanup`` removes what an
owner killed before ``close`` left: directories whose owner is gone, and their servers.

``bind`` names the addresses the server listens on: ``127.0.0.1`` alone by default (nothing
outside this machine reaches it); more addresses (the root end of a veth pair, whose other end is
in a network namespace of a load host) let clients reach it there, each with ``url_on(address)``.

As root (``initdb``, ``postgres`` and ``mariadbd`` refuse to run as root), the server runs as its
package's user (``postgres``, ``mysql``), which owns the directory; otherwise as the current user.
"""

from __future__ import annotations

import functools
import glob
import importlib
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from queues.backends import BACKENDS, backend_class
from queues.errors import BackendUnavailable, NotSupported
from queues.workers.lifeline import die_with_parent
from queues.workers.processes import group_members, kill_group, process_alive, process_start_time

log = logging.getLogger(__name__)

DIR_PREFIX = "imq-server-"
OWNER_FILE, SERVER_FILE, LOG_FILE = "owner.pid", "server.pid", "server.log"
#: Longest a start (or the start after a restart) may take before it is reported as failed.
START_TIMEOUT_S = 30.0
#: Starts tried on new ports when the first one's port was taken in the meantime.
PORT_ATTEMPTS = 3
POLL_S = 0.02


class PrivateServer:
    """One server process of a kind, in a temporary directory of its own. Not thread-safe.

    ``start`` prepares the directory the first time (a fresh port, the data files), then starts
    the server and returns once it answers. A context manager: ``close`` on exit."""

    kind: ClassVar[str]
    #: What survives a crash, the first is the default.
    persistence_modes: ClassVar[tuple[str, ...]]
    #: The modes in which acknowledged writes survive ``restart``.
    durable_modes: ClassVar[tuple[str, ...]]
    #: The system user a server of this kind runs as when we are root (``None``: root itself).
    system_user: ClassVar[str | None] = None

    def __init__(self, persistence: str | None = None, *, bind: Sequence[str] = ("127.0.0.1",)) -> None:
        """Raises ``NotSupported`` for a persistence this kind does not have, ``ValueError`` for a
        ``bind`` that is empty or not IP addresses; nothing runs yet."""
        self.bind = bind_addresses(bind)
        self.persistence = persistence or self.persistence_modes[0]
        if self.persistence not in self.persistence_modes:
            raise NotSupported(
                f"a private {self.kind} server has no persistence {self.persistence!r}; "
                f"choose one of: {', '.join(self.persistence_modes)}"
            )
        self.binaries = self.find_binaries()
        self.dir: str | None = None
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def durable(self) -> bool:
        return self.persistence in self.durable_modes

    @property
    def url(self) -> str:
        """The URL of the backend's clients on this machine (at the first ``bind`` address)."""
        return self.url_on(self.bind[0])

    def url_on(self, address: str) -> str:
        """The URL of a client that reaches the server at ``address``, one of ``bind``. Raises
        ``ValueError`` for an address it does not listen on."""
        address = str(ipaddress.ip_address(address))
        if address not in self.bind:
            raise ValueError(f"{self!r} does not listen on {address} (bind: {', '.join(self.bind)})")
        return self.url_at(url_host(address))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.persistence} {self.url if self.port else '(not started)'}>"

    def __enter__(self) -> PrivateServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what each kind says -------------------------------------------------------------------

    def find_binaries(self) -> dict[str, str]:
        """The programs this kind runs, by name. Raises ``NotSupported`` naming a missing one."""
        raise NotImplementedError

    def url_at(self, host: str) -> str:
        """The backend's URL with ``host`` (an address, IPv6 in brackets) and ``self.port``."""
        raise NotImplementedError

    def initialise(self) -> None:
        """Create the data files in ``self.dir`` (once, before the first start)."""

    def command(self) -> list[str]:
        """The server's command line (``self.port`` and ``self.dir`` are set)."""
        raise NotImplementedError

    def ping(self) -> None:
        """Return once the server answers a query; raise anything while it does not."""
        raise NotImplementedError

    def after_first_start(self) -> None:
        """Create what the backend expects (a database), once."""

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server and return once it answers (at most ``START_TIMEOUT_S``). A first
        start whose port was taken meanwhile tries another. Idempotent while it runs.

        Raises ``BackendUnavailable`` with the last line of the server's log when it does not
        come up: it is stopped then, and after a failed first start its directory is removed."""
        if self.running:
            return
        if self.dir is not None:
            self._spawn()
            return
        self._prepare()
        try:
            for attempt in range(1, PORT_ATTEMPTS + 1):
                try:
                    self._spawn()
                    break
                except BackendUnavailable:
                    if attempt == PORT_ATTEMPTS:
                        raise
                    self.port = free_port(self.bind)  # another process took it between the probe and the bind
            self.after_first_start()
        except BaseException:
            self.close()  # a context manager's __exit__ does not run when __enter__ raises
            raise

    def restart(self, downtime_s: float = 0.0) -> float:
        """Crash the server (SIGKILL to its process group), wait ``downtime_s``, start it again
        on the same port and data; return the seconds it was unreachable. Raises as ``start``."""
        if self.dir is None:
            raise RuntimeError(f"{self!r} was never started")
        began = time.monotonic()
        self._kill()
        time.sleep(downtime_s)
        self._spawn()
        return time.monotonic() - began

    def close(self) -> None:
        """Stop the server if it runs and remove its directory. Idempotent; quiet on a server
        already dead."""
        self._kill()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def _prepare(self) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{self.kind}-")
        try:
            _write(os.path.join(self.dir, OWNER_FILE), f"{os.getpid()} {process_start_time(os.getpid())}")
            user = self._run_as()
            if user is not None:
                shutil.chown(self.dir, user, user)
            self.port = free_port(self.bind)
            self.initialise()
        except BaseException:
            self.close()
            raise

    def _spawn(self) -> None:
        assert self.dir is not None
        with open(os.path.join(self.dir, LOG_FILE), "ab") as out:
            self.process = self.popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        _write(os.path.join(self.dir, SERVER_FILE), str(self.process.pid))
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                self._kill()
                raise BackendUnavailable(f"private {self.kind} server exited at start: {self.last_log_line()}")
            try:
                self.ping()
                return
            except Exception as exc:  # any driver's "not yet": refused, starting up, loading
                if time.monotonic() >= deadline:
                    self._kill()
                    raise BackendUnavailable(
                        f"private {self.kind} server did not answer within {START_TIMEOUT_S:g} s ({exc}); "
                        f"its log says: {self.last_log_line()}"
                    ) from exc
            time.sleep(POLL_S)

    def popen(self, command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """``command`` as a direct child in a session of its own, as ``_run_as()``, dying with
        us: Popen switches user before ``preexec_fn``, and the death signal must be set after
        that (a change of credentials clears it)."""
        user = self._run_as()
        as_user: dict[str, Any] = {"user": user, "group": user, "extra_groups": []} if user else {}
        return subprocess.Popen(
            command,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=functools.partial(die_with_parent, signal.SIGKILL),
            **as_user,
            **kwargs,
        )

    def run(self, command: list[str], what: str) -> None:
        """A setup program (``initdb``) as ``popen`` starts it, to its end; its output goes to the
        log. Raises ``BackendUnavailable`` with the log's last line when it fails."""
        assert self.dir is not None
        with open(os.path.join(self.dir, LOG_FILE), "ab") as out:
            process = self.popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            code = process.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            kill_group(process.pid)
            process.wait()
            code = None
        if code != 0:
            raise BackendUnavailable(f"private {self.kind} server: {what} failed: {self.last_log_line()}")

    def _kill(self) -> None:
        if self.process is None:
            return
        kill_group(self.process.pid)
        self.process.wait()
        self.process = None

    def _run_as(self) -> str | None:
        return self.system_user if os.geteuid() == 0 else None

    def last_log_line(self) -> str:
        if self.dir is None:
            return "(no log)"
        try:
            with open(os.path.join(self.dir, LOG_FILE), "rb") as log_file:
                lines = [line.strip() for line in log_file.read().decode(errors="replace").splitlines()]
        except OSError:
            return "(no log)"
        return next((line for line in reversed(lines) if line), "(empty log)")


# -- processes -----------------------------------------------------------------------------------


def free_port(addresses: Sequence[str] = ("127.0.0.1",)) -> int:
    """A TCP port nothing listens on now at any of ``addresses`` (the caller may still lose it to
    a race). Raises ``BackendUnavailable`` when none is found in a few tries."""
    for _ in range(PORT_ATTEMPTS * 10):
        with _listening_socket(addresses[0], 0) as probe:  # held: the others are tried on its port
            port = int(probe.getsockname()[1])
            if all(_bindable(address, port) for address in addresses[1:]):
                return port
    raise BackendUnavailable(f"no TCP port free at all of {', '.join(addresses)}")


def _listening_socket(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _bindable(address: str, port: int) -> bool:
    try:
        _listening_socket(address, port).close()
    except OSError:
        return False
    return True


def bind_addresses(bind: Sequence[str]) -> tuple[str, ...]:
    """``bind`` as normalised IP addresses, duplicates dropped, order kept. Raises ``ValueError``
    for an empty ``bind``, a bare string (a common slip: one address is ``("10.0.0.1",)``) or
    what is not an IP address (a host name would make the server resolve it at start)."""
    if isinstance(bind, str) or not bind:
        raise ValueError(f"bind takes a non-empty sequence of IP addresses, not {bind!r}")
    return tuple(dict.fromkeys(str(ipaddress.ip_address(address)) for address in bind))


def url_host(address: str) -> str:
    """``address`` as the host part of a URL (IPv6 in brackets)."""
    return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address


def _write(path: str, text: str) -> None:
    with open(path, "w") as out:
        out.write(text)


def _read(path: str) -> str:
    try:
        with open(path) as source:
            return source.read().strip()
    except OSError:
        return ""


# -- cleanup -------------------------------------------------------------------------------------


def private_server_dirs() -> list[str]:
    """Every ``<tmp>/imq-server-*`` directory, live or stale."""
    return sorted(glob.glob(os.path.join(tempfile.gettempdir(), f"{DIR_PREFIX}*")))


def owner_pid(directory: str) -> int:
    """The pid of the process that started the server of ``directory`` (0: unknown)."""
    pid = _read(os.path.join(directory, OWNER_FILE)).partition(" ")[0]
    return int(pid) if pid.isdigit() else 0


def owner_alive(directory: str) -> bool:
    """Whether the process that started the server of ``directory`` still runs."""
    pid, _, start_time = _read(os.path.join(directory, OWNER_FILE)).partition(" ")
    return pid.isdigit() and process_alive(int(pid), start_time)


def server_pid(directory: str) -> int:
    """The pid of the server of ``directory``, the leader of its process group (0: none yet)."""
    pid = _read(os.path.join(directory, SERVER_FILE))
    return int(pid) if pid.isdigit() else 0


def server_group(directory: str) -> list[int]:
    """The live processes of the server of ``directory`` (its process group)."""
    pid = server_pid(directory)
    return group_members(pid) if pid else []


def private_server_processes() -> dict[int, str]:
    """``{pid: directory}`` of the live processes whose command line names a private server's
    directory (the servers, and what they started), whether or not the directory still exists."""
    in_command = re.compile(re.escape(os.path.join(tempfile.gettempdir(), DIR_PREFIX)) + r"[^/\s]*")
    found = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read().decode(errors="replace")
        except OSError:  # not a process, or gone meanwhile
            continue
        if (named := in_command.search(command)) and process_alive(int(entry)):
            found[int(entry)] = named[0]
    return found


def stale_private_servers() -> list[str]:
    """The private server directories whose owner is gone (killed before ``close``). A directory
    without an owner file yet (being created) counts as live for a minute."""
    return [
        directory
        for directory in private_server_dirs()
        if not owner_alive(directory)
        and not (_younger_than(directory, 60.0) and not _read(os.path.join(directory, OWNER_FILE)))
    ]


def stale_private_servers_cleanup() -> list[str]:
    """Remove the directories of ``stale_private_servers``, killing their server first if it
    still runs; return the directories removed."""
    removed = []
    for directory in stale_private_servers():
        if pid := server_pid(directory):
            kill_group(pid)
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    return removed


def _younger_than(directory: str, seconds: float) -> bool:
    try:
        return time.time() - os.stat(directory).st_mtime < seconds
    except OSError:
        return False


# -- binaries ------------------------------------------------------------------------------------


def find_binary(name: str, install: str, *, search: tuple[str, ...] = ("/usr/sbin", "/usr/local/sbin")) -> str:
    """The path of program ``name`` on PATH or in ``search`` (globs allowed, newest first).
    Raises ``NotSupported`` naming it and ``install``, how to get it."""
    found = shutil.which(name)
    for pattern in search:
        if found:
            break
        for directory in sorted(glob.glob(pattern), key=_version_key, reverse=True):
            if os.access(candidate := os.path.join(directory, name), os.X_OK):
                found = candidate
                break
    if not found:
        raise NotSupported(f"a private server needs {name}, which is not installed here: {install}")
    return found


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in path.split("/") if part.isdigit())


# -- registry ------------------------------------------------------------------------------------

#: backend alias -> the dotted path of the private server class it restarts (imported lazily).
PRIVATE_SERVERS: dict[str, str] = {
    "redis-list": "queues.faults.server_kinds.RedisServer",
    "redis-list-noack": "queues.faults.server_kinds.RedisServer",
    "redis-stream": "queues.faults.server_kinds.RedisServer",
    "postgres": "queues.faults.server_kinds.PostgresServer",
    "postgres-notify": "queues.faults.server_kinds.PostgresServer",
    "mysql": "queues.faults.server_kinds.MariaDBServer",
}


def private_server_class(alias: str) -> type[PrivateServer]:
    """The private server class of backend ``alias``. Raises ``UnknownBackend`` for an alias no
    backend has, ``NotSupported`` for a backend without a private server."""
    if alias not in PRIVATE_SERVERS:
        if alias not in BACKENDS:
            backend_class(alias)  # raises UnknownBackend, with a "did you mean"
        raise NotSupported(
            f"{alias} has no private server to restart; restart-server takes: {', '.join(sorted(PRIVATE_SERVERS))}"
        )
    module, _, name = PRIVATE_SERVERS[alias].rpartition(".")
    cls: type[PrivateServer] = getattr(importlib.import_module(module), name)
    return cls


def private_server(
    alias: str, *, persistence: str | None = None, bind: Sequence[str] = ("127.0.0.1",)
) -> PrivateServer:
    """A private server (not started yet) for backend ``alias``, listening on ``bind``. Raises as
    ``private_server_class``, ``NotSupported`` for a persistence its kind does not have or a
    program that is not installed, naming it and how to install it, and ``ValueError`` for a
    ``bind`` that is not IP addresses."""
    return private_server_class(alias)(persistence, bind=bind)


def private_server_kinds() -> dict[str, tuple[str, ...]]:
    """``{alias: persistence modes, default first}`` of every backend that can take
    ``restart-server``."""
    return {alias: private_server_class(alias).persistence_modes for alias in sorted(PRIVATE_SERVERS)}
