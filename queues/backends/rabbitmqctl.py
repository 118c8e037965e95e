"""Make the broker close connections, through ``rabbitmqctl``: the ``cut-connections`` fault.

AMQP has no way for one client to close another's connection; the broker's own tools do it. The
management HTTP API could (``DELETE /api/connections/<name>``), but it is an optional plugin
(``rabbitmq_management``, off on this machine); ``rabbitmqctl`` comes with every broker and works
for root or the ``rabbitmq`` user on the broker's host (it needs the node's Erlang cookie).

A connection is found by the ``connection_name`` its client declared (``_amqp.Link`` names each
one after its queue and role), read from ``list_connections client_properties``. Each call
starts an Erlang VM: about half a second here, so the closes run side by side.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from queues.errors import NotSupported, OperationFailed

#: Bound on one ``rabbitmqctl`` call (an Erlang VM's start plus the broker's answer).
CTL_TIMEOUT_S = 30.0
SUBCOMMANDS = ("list_connections", "close_connection")
#: ``{"connection_name","<name>"}`` in ``client_properties`` as ``list_connections`` prints them.
_CONNECTION_NAME = re.compile(r'\{"connection_name","([^"]*)"\}')


def close_connections(names: set[str], reason: str, *, node: str | None = None) -> int:
    """Close every connection whose ``connection_name`` is one of ``names``; return how many the
    broker closed. ``node``: the broker's node name (``rabbitmqctl``'s default when ``None``).

    Raises ``NotSupported`` without ``rabbitmqctl``, ``OperationFailed`` when it fails or takes
    longer than ``CTL_TIMEOUT_S``."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise NotSupported(
            "rabbitmq: closing a connection needs rabbitmqctl (from the rabbitmq-server package, on the "
            "broker's host, run as root or rabbitmq), and it is not on PATH"
        )
    command = [ctl, "-q", *(["-n", node] if node else [])]
    listing = _output(_start([*command, "list_connections", "--no-table-headers", "pid", "client_properties"]))
    pids = [
        line.split("\t", 1)[0]
        for line in listing.splitlines()
        if (found := _CONNECTION_NAME.search(line)) and found[1] in names
    ]
    closing = [_start([*command, "close_connection", pid, reason]) for pid in pids]
    return sum(_succeeded(process) for process in closing)


def _start(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _succeeded(process: subprocess.Popen[str]) -> bool:
    """Whether a ``close_connection`` succeeded (for a connection gone in between, it did not)."""
    try:
        _output(process)
    except OperationFailed:
        return False
    return True


def _output(process: subprocess.Popen[str]) -> str:
    """What ``process`` printed; ``OperationFailed`` with its last line of errors if it failed
    or took longer than ``CTL_TIMEOUT_S`` (then it is killed)."""
    what = next((arg for arg in process.args if arg in SUBCOMMANDS), "")  # type: ignore[union-attr]
    try:
        out, err = process.communicate(timeout=CTL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise OperationFailed(f"rabbitmq: rabbitmqctl {what} took more than {CTL_TIMEOUT_S:.0f} s") from None
    if process.returncode != 0:
        lines = [line.strip() for line in (err or out).splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {process.returncode}"
        raise OperationFailed(f"rabbitmq: rabbitmqctl {what} failed: {why}")
    return out
