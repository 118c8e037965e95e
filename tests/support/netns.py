"""Network namespaces for load hosts in tests: each host gets a namespace of its own, joined to
the root namespace by a veth pair, so that it has an address of its own and reaches only what
listens on the root end of its pair.

Names: namespaces ``imq-ns-<6 hex>-<letter>``, root-side veth ends ``imq<6 hex><letter>`` (an
interface name has at most 15 characters). Addresses: one ``10.213.<n>.0/30`` per pair, ``.1`` on
the root end and ``.2`` in the namespace, ``<n>`` chosen under a lock among those no interface of
the root namespace holds. The namespace gets no other route: nothing it sends leaves its pair,
and it cannot reach the root namespace's 127.0.0.1.

Only what this module created is ever removed (``Namespaces.close`` and, for what a test failed
to close, ``leftovers_remove`` from the session's end in ``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

PREFIX = "imq-ns-"
#: Pairs take /30s of this range, used only on the veth interfaces we create.
RANGE = ipaddress.ip_network("10.213.0.0/16")
NETNS_DIR = Path("/run/netns")
#: Held (flock) while a /30 is chosen and taken. Not ``NETNS_DIR``: ``ip netns add`` locks it.
LOCK_PATH = Path("/run/imq-netns.lock")
IP_TIMEOUT_S = 10

#: Every namespace and root-side veth end created by this process and not removed yet.
created: dict[str, str] = {}  # namespace -> its veth's root end


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here (not root, no ``ip``, refused), or ``None``."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if not shutil.which("ip"):
        return "network namespaces need the ip command (iproute2), which is not installed"
    probe = f"{PREFIX}{secrets.token_hex(3)}-probe"
    done = ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"ip netns add refused here: {done.stderr.strip()}"
    ip("netns", "delete", probe, check=False)
    return None


@dataclass(frozen=True)
class Pair:
    """A namespace and the veth pair that joins it to the root namespace."""

    namespace: str
    veth: str  # the root end
    root_address: str  # what the namespace reaches the root namespace at
    address: str  # the namespace's own: its connections come from it

    @property
    def prefix(self) -> list[str]:
        """The command prefix that runs a program in the namespace."""
        return ["ip", "netns", "exec", self.namespace]


class Namespaces:
    """One namespace with its veth pair per name in ``names``, as ``self.pairs[name]``. A context
    manager; ``close`` removes them (also when the creation failed half-way)."""

    def __init__(self, names: str | list[str]) -> None:
        self.tag = secrets.token_hex(3)
        self.names = list(names)
        self.pairs: dict[str, Pair] = {}

    def __enter__(self) -> Namespaces:
        try:
            for name in self.names:
                self.pairs[name] = self._create(name)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _create(self, name: str) -> Pair:
        namespace, veth = f"{PREFIX}{self.tag}-{name}", f"imq{self.tag}{name}"
        with _locked():  # two sessions must not take the same /30
            subnet = _free_subnet()
            root_address, address = (str(a) for a in list(subnet.hosts())[:2])
            ip("netns", "add", namespace)
            created[namespace] = veth
            ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            ip("address", "add", f"{root_address}/{subnet.prefixlen}", "dev", veth)
        ip("link", "set", veth, "up")
        ip("-n", namespace, "address", "add", f"{address}/{subnet.prefixlen}", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        return Pair(namespace, veth, root_address, address)

    def close(self) -> None:
        """Remove every namespace and pair of this set. Idempotent."""
        for name in self.names:
            remove(f"{PREFIX}{self.tag}-{name}")


def remove(namespace: str) -> None:
    """Kill what still runs in ``namespace`` (our hosts: a namespace with a process in it outlives
    its name, and its veth pair with it), delete its veth pair and the namespace."""
    if namespace_exists(namespace):
        for pid in ip("netns", "pids", namespace, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    if (veth := created.get(namespace)) and ip("link", "show", veth, check=False).returncode == 0:
        ip("link", "delete", veth, check=False)  # takes its peer with it
    if namespace_exists(namespace):
        ip("netns", "delete", namespace)
    created.pop(namespace, None)


def namespace_exists(namespace: str) -> bool:
    return (NETNS_DIR / namespace).exists()


def leftovers() -> list[str]:
    """The namespaces this process created that still exist, or whose veth end still does."""
    return sorted(
        ns
        for ns, veth in created.items()
        if namespace_exists(ns) or ip("link", "show", veth, check=False).returncode == 0
    )


def leftovers_remove() -> list[str]:
    """Remove ``leftovers()``; return their names."""
    found = leftovers()
    for namespace in found:
        remove(namespace)
    return found


@contextlib.contextmanager
def _locked():
    with open(LOCK_PATH, "a") as lock:  # closing it releases the lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 of ``RANGE`` that no address of the root namespace falls in (at 10.213.<n>.0)."""
    taken = {
        ipaddress.ip_interface(word).network
        for line in ip("-o", "-4", "address", "show").stdout.splitlines()
        for word in line.split()[3:4]
    }
    candidates = [ipaddress.ip_network(f"{RANGE.network_address + 256 * n}/30") for n in range(256)]
    free = [net for net in candidates if not any(net.overlaps(other) for other in taken)]
    if not free:
        raise RuntimeError(f"no free /30 left in {RANGE} for a veth pair")
    return random.choice(free)
