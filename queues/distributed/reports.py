"""What a load host sends the coordinator: its ``ShareReport`` (the worker messages since the
last one, encoded), how their times move onto the coordinator's clock (``on_clock``), and the sum
of the hosts' histograms (``union_histogram``).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack  # type: ignore[import-untyped]

from queues.measurement.histograms import merge_encoded, new_histogram
from queues.workers.reports import PRODUCER, BatchReport, Done, Message, Reconnected, from_wire, to_wire


@dataclass
class ShareReport:
    """One host's report: the worker messages since its last one, its producers' sent counts,
    its own e2e histogram so far (encoded), whether it is its last, and an error if it failed."""

    seq: int
    messages: list[Message]
    sent: dict[int, int] = field(default_factory=dict)
    e2e: bytes = b""
    final: bool = False
    error: str | None = None

    def encode(self) -> bytes:
        return zlib.compress(
            msgpack.packb(
                {
                    "seq": self.seq,
                    "messages": [to_wire(m) for m in self.messages],
                    "sent": list(self.sent.items()),
                    "e2e": self.e2e,
                    "final": self.final,
                    "error": self.error,
                },
                use_bin_type=True,
            ),
            1,
        )

    @classmethod
    def decode(cls, payload: bytes) -> ShareReport:
        data = msgpack.unpackb(zlib.decompress(payload), raw=False)
        return cls(
            data["seq"],
            [from_wire(tuple(w)) for w in data["messages"]],
            dict(data["sent"]),
            data["e2e"],
            data["final"],
            data["error"],
        )


def on_clock(message: Message, shift_ns: int) -> Message:
    """``message`` with its times (``time.time_ns`` of the host) moved by ``shift_ns``."""
    if not shift_ns:
        return message
    match message:
        case BatchReport():
            return replace(message, received_ns=message.received_ns + shift_ns)
        case Done(role=role) if role == PRODUCER:
            return replace(
                message,
                last_send_ns=message.last_send_ns and message.last_send_ns + shift_ns,
                last_window_send_ns=message.last_window_send_ns and message.last_window_send_ns + shift_ns,
            )
        case Reconnected():
            return replace(message, at_ns=message.at_ns + shift_ns)
    return message


def union_histogram(encoded: Sequence[bytes]) -> Any:
    """The sum of encoded histograms (what the merged run's must equal)."""
    total = new_histogram()
    for blob in encoded:
        if blob:
            merge_encoded(total, blob)
    return total
