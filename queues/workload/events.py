"""The event encoding: fixed 32-byte little-endian records, packed back to back.

One message holds ``events_per_message`` records. A record is::

    magic u2 | producer u2 | seq u4 | value i8 | intended_ns i8 | sent_ns i8

``seq`` counts a producer's events from 0; ``value`` is the integer being summed;
``intended_ns`` is when the schedule meant the event to be sent and ``sent_ns`` when the send
call started, both from ``time.time_ns()`` (the wall clock, so that workers on other machines
can be compared once their clocks are synchronised). Encoding and decoding are numpy operations
over whole batches: no per-event Python work except slicing a batch into messages.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np

from queues.errors import DecodeError

MAGIC = 0x1A51
EVENT = np.dtype(
    [
        ("magic", "<u2"),
        ("producer", "<u2"),
        ("seq", "<u4"),
        ("value", "<i8"),
        ("intended_ns", "<i8"),
        ("sent_ns", "<i8"),
    ]
)
EVENT_SIZE = EVENT.itemsize  # 32
#: One record as ``struct`` reads it (``EVENT``'s layout): a message of one event read without
#: numpy, whose per-call cost dominates on arrays of one (``queues.workers.counting.count_one``).
EVENT_STRUCT = struct.Struct("<HHIqqq")
assert EVENT_STRUCT.size == EVENT_SIZE
MAX_PRODUCERS = 2**16 - 1
MAX_EVENTS_PER_PRODUCER = 2**32 - 1


def encode_events(
    producer: int, seq: np.ndarray, value: np.ndarray, intended_ns: np.ndarray | int, sent_ns: int
) -> np.ndarray:
    """A record array for the given events (not yet split into messages)."""
    records = np.empty(len(seq), dtype=EVENT)
    records["magic"] = MAGIC
    records["producer"] = producer
    records["seq"] = seq
    records["value"] = value
    records["intended_ns"] = intended_ns
    records["sent_ns"] = sent_ns
    return records


class PackedMessages(Sequence[bytes]):
    """Message bodies of one fixed size stored back to back in one buffer (the last may be
    shorter): a ``Sequence[bytes]`` that costs one object per batch instead of one per message.

    Backends that move a batch as a unit (the in-memory pipe) send ``buffer`` whole; the others
    iterate it like any list of bodies. ``decode_bodies`` reads ``buffer`` directly.
    """

    __slots__ = ("buffer", "size")

    def __init__(self, buffer: bytes, size: int) -> None:
        self.buffer, self.size = buffer, size

    def __len__(self) -> int:
        return -(-len(self.buffer) // self.size)

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> PackedMessages: ...
    def __getitem__(self, index: int | slice) -> bytes | PackedMessages:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                # packed again: going forwards, the one short message (the last) stays last
                if step < 0 and len(self.buffer) % self.size:
                    raise ValueError("a backward slice would put the short last message first")
                return PackedMessages(b"".join(self[i] for i in range(start, stop, step)), self.size)
            return PackedMessages(self.buffer[start * self.size : stop * self.size], self.size)
        count = len(self)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError("message index out of range")
        return self.buffer[index * self.size : (index + 1) * self.size]

    def __iter__(self) -> Iterator[bytes]:
        size, buffer = self.size, self.buffer
        return (buffer[i : i + size] for i in range(0, len(buffer), size))

    def __reduce__(self) -> tuple[type[PackedMessages], tuple[bytes, int]]:
        return PackedMessages, (self.buffer, self.size)


def split_messages(records: np.ndarray, events_per_message: int) -> PackedMessages:
    """The message bodies of ``events_per_message`` records each (the last may hold fewer)."""
    return PackedMessages(records.tobytes(), events_per_message * EVENT_SIZE)


def decode_body(body: bytes) -> np.ndarray:
    """The records of one message. Raises ``DecodeError`` for anything that is not one."""
    if not body or len(body) % EVENT_SIZE:
        raise DecodeError(f"message of {len(body)} bytes is not a multiple of {EVENT_SIZE}")
    records = np.frombuffer(body, dtype=EVENT)
    if not (records["magic"] == MAGIC).all():
        raise DecodeError("message does not start with the imqueue event magic number")
    return records


def decode_bodies(bodies: Sequence[bytes]) -> tuple[np.ndarray, list[int]]:
    """The records of every well-formed body, and the indices of the poison ones.

    The fast path joins the batch and decodes it in one numpy call; only a batch that holds a
    bad message is decoded body by body to find it.
    """
    if isinstance(bodies, PackedMessages):
        joined = bodies.buffer  # already one buffer: nothing to join
        if len(joined) % EVENT_SIZE == 0 and bodies.size % EVENT_SIZE == 0 and joined:
            records = np.frombuffer(joined, dtype=EVENT)
            if (records["magic"] == MAGIC).all():
                return records, []
        bodies = list(bodies)
    joined = b"".join(bodies)
    lengths = set(map(len, bodies))  # a C-level pass: no Python work per message
    if all(n and n % EVENT_SIZE == 0 for n in lengths):
        records = np.frombuffer(joined, dtype=EVENT)
        if (records["magic"] == MAGIC).all():
            return records, []
    good: list[np.ndarray] = []
    poison: list[int] = []
    for index, body in enumerate(bodies):
        try:
            good.append(decode_body(body))
        except DecodeError:
            poison.append(index)
    records = np.concatenate(good) if good else np.empty(0, dtype=EVENT)
    return records, poison
