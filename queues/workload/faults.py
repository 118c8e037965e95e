"""Faults as part of the workload spec: ``KIND@T[:ARG]`` texts, parsed and checked.

A fault is written the way the command line takes it (``--fault kill-consumer@3``), stored that
way in the spec (a tuple of canonical texts, so a run's spec copy, the admin and the JSON
history all carry the same words) and parsed here into a ``FaultSpec``. What a fault needs of
the backend (a process to signal, a server of the run's own) is checked where the backend is
known: ``queues.faults.injectors``. This module checks what the spec alone can tell: the kind, the time
against the run's end, the target against the workers the spec starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from queues.errors import InvalidSpec

KILL_CONSUMER, KILL_PRODUCER = "kill-consumer", "kill-producer"
PAUSE_CONSUMER = "pause-consumer"
CUT_CONNECTIONS = "cut-connections"
RESTART_SERVER = "restart-server"
POISON = "poison"

#: Each kind and what its ``:ARG`` (and a second ``:ARG``) mean, as the error and the help say.
FAULT_KINDS: dict[str, str] = {
    KILL_CONSUMER: (
        "kill-consumer@T[:INDEX]  SIGKILL consumer INDEX (default 0); a replacement starts after replace_after_s"
    ),
    KILL_PRODUCER: "kill-producer@T[:INDEX]  SIGKILL producer INDEX (default 0); its replacement resumes its share",
    PAUSE_CONSUMER: "pause-consumer@T:D[:INDEX]  SIGSTOP consumer INDEX (default 0) for D seconds, then SIGCONT",
    CUT_CONNECTIONS: "cut-connections@T  the server closes the run's connections; workers reconnect",
    RESTART_SERVER: (
        "restart-server@T[:PERSISTENCE]  crash and restart the run's private server (redis: none or aof-always)"
    ),
    POISON: "poison@T[:N]  N malformed messages (default 1) into the queue",
}
MAX_POISON = 100_000
MAX_PAUSE_S = 3600.0
_TEXT = re.compile(r"^(?P<kind>[a-z-]+)@(?P<at>[0-9]*\.?[0-9]+)(?::(?P<arg>[^:]+))?(?::(?P<arg2>[^:]+))?$")


@dataclass(frozen=True)
class FaultSpec:
    """One fault of a run: ``kind`` at ``at_s`` seconds after the producers started.

    ``target`` is the worker index (kill, pause), ``duration_s`` the pause, ``count`` the poison
    messages, ``persistence`` the private server's durability (restart-server; ``None``: the
    kind's default)."""

    kind: str
    at_s: float
    target: int = 0
    duration_s: float = 0.0
    count: int = 0
    persistence: str | None = None

    @property
    def role(self) -> str:
        """The role of the worker a kill or pause acts on."""
        return "producer" if self.kind == KILL_PRODUCER else "consumer"

    def text(self) -> str:
        """The canonical ``KIND@T[:ARG]`` text (what the spec stores)."""
        at = f"{self.at_s:g}"
        match self.kind:
            case "kill-consumer" | "kill-producer":
                return f"{self.kind}@{at}" + (f":{self.target}" if self.target else "")
            case "pause-consumer":
                return f"{self.kind}@{at}:{self.duration_s:g}" + (f":{self.target}" if self.target else "")
            case "restart-server":
                return f"{self.kind}@{at}" + (f":{self.persistence}" if self.persistence else "")
            case "poison":
                return f"{self.kind}@{at}:{self.count}"
        return f"{self.kind}@{at}"

    def target_label(self) -> str:
        """What the fault acts on, in words (a marker's ``target``)."""
        if self.kind in (KILL_CONSUMER, KILL_PRODUCER, PAUSE_CONSUMER):
            return f"{self.role} {self.target}"
        if self.kind == POISON:
            return "queue"
        return "server" if self.kind == RESTART_SERVER else "connections"


def fault_parse(text: str) -> FaultSpec:
    """The ``FaultSpec`` of ``KIND@T[:ARG]``; raises ``InvalidSpec`` (field ``faults``) saying
    what is allowed."""
    if not isinstance(text, str):
        raise InvalidSpec(f"a fault is a text KIND@T[:ARG], got {text!r}", field="faults")
    match = _TEXT.match(text.strip())
    if not match:
        raise InvalidSpec(
            f"fault {text!r} is not KIND@T[:ARG] (for example kill-consumer@3 or pause-consumer@2:1.5)",
            field="faults",
        )
    kind, at_s, arg, arg2 = match["kind"], float(match["at"]), match["arg"], match["arg2"]
    if kind not in FAULT_KINDS:
        raise InvalidSpec(
            f"unknown fault kind {kind!r} in {text!r}; the kinds: {', '.join(FAULT_KINDS)}", field="faults"
        )
    usage = FAULT_KINDS[kind].split("  ", 1)[0]
    if arg2 is not None and kind != PAUSE_CONSUMER:
        raise InvalidSpec(f"fault {text!r} has one argument too many: {usage}", field="faults")
    match kind:
        case "kill-consumer" | "kill-producer":
            return FaultSpec(kind, at_s, target=_whole(arg or "0", text, usage))
        case "pause-consumer":
            if arg is None:
                raise InvalidSpec(f"fault {text!r} needs its pause in seconds: {usage}", field="faults")
            duration = _seconds(arg, text, usage)
            return FaultSpec(kind, at_s, duration_s=duration, target=_whole(arg2 or "0", text, usage))
        case "restart-server":
            return FaultSpec(kind, at_s, persistence=arg)
        case "poison":
            count = _whole(arg or "1", text, usage)
            if not 1 <= count <= MAX_POISON:
                raise InvalidSpec(f"fault {text!r}: N must be from 1 to {MAX_POISON:,}: {usage}", field="faults")
            return FaultSpec(kind, at_s, count=count)
    if arg is not None:
        raise InvalidSpec(f"fault {text!r} takes no argument: {usage}", field="faults")
    return FaultSpec(kind, at_s)


def faults_check(faults: tuple[FaultSpec, ...], *, end_s: float | None, producers: int, consumers: int) -> None:
    """Raise ``InvalidSpec`` for a fault the spec cannot take: any fault in a burst (``end_s``
    ``None``: its end is not known in advance, and recovery is measured against the offered
    rate), a time at or past the run's end, a worker index the run does not start."""
    for fault in faults:
        if end_s is None:
            raise InvalidSpec(
                f"fault {fault.text()} needs a steady run: set rate_eps (--rate); a burst's end is not "
                "known in advance, and recovery is measured against the offered rate",
                field="faults",
            )
        if fault.at_s >= end_s:
            raise InvalidSpec(
                f"fault {fault.text()} comes at {fault.at_s:g} s, at or after the run's end at {end_s:g} s "
                "(warmup_s + duration_s): choose an earlier time",
                field="faults",
            )
        workers = producers if fault.role == "producer" else consumers
        if fault.kind in (KILL_CONSUMER, KILL_PRODUCER, PAUSE_CONSUMER) and fault.target >= workers:
            raise InvalidSpec(
                f"fault {fault.text()} targets {fault.role} {fault.target}, but the run starts "
                f"{workers} {fault.role}(s), numbered from 0",
                field="faults",
            )


def faults_normalise(values: object) -> tuple[str, ...]:
    """The spec's ``faults``: canonical texts from a list of texts, or one text of several
    separated by commas, spaces or new lines (a form's text area)."""
    if values is None or values == "":
        return ()
    if isinstance(values, str):
        items = [part for part in re.split(r"[\s,]+", values) if part]
    elif isinstance(values, list | tuple):
        items = list(values)
    else:
        raise InvalidSpec(f"faults must be a list of KIND@T[:ARG] texts, got {values!r}", field="faults")
    return tuple(fault_parse(item).text() for item in items)


def _whole(value: str, text: str, usage: str) -> int:
    if not value.isdigit():
        raise InvalidSpec(f"fault {text!r}: {value!r} is not a whole number: {usage}", field="faults")
    return int(value)


def _seconds(value: str, text: str, usage: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise InvalidSpec(f"fault {text!r}: {value!r} is not a number of seconds: {usage}", field="faults") from None
    if not 0 < seconds <= MAX_PAUSE_S:
        raise InvalidSpec(
            f"fault {text!r}: the pause must be over 0 and at most {MAX_PAUSE_S:g} s: {usage}", field="faults"
        )
    return seconds
