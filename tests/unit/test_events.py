import pickle

import numpy as np
import pytest

from queues.errors import DecodeError
from queues.workload.events import EVENT_SIZE, MAGIC, decode_bodies, decode_body, encode_events, split_messages


def sample_records(n=10, producer=3):
    seq = np.arange(n, dtype=np.int64)
    return encode_events(producer, seq, seq + 101, 1_000, 2_000)


def test_record_is_32_bytes_and_round_trips():
    assert EVENT_SIZE == 32
    recs = sample_records()
    decoded = decode_body(recs.tobytes())
    assert (decoded == recs).all()
    assert decoded["producer"][0] == 3 and decoded["value"][-1] == 110
    assert (decoded["magic"] == MAGIC).all()
    assert decoded["intended_ns"][0] == 1_000 and decoded["sent_ns"][0] == 2_000


@pytest.mark.parametrize("per_message", [1, 3, 10, 50])
def test_split_into_messages_keeps_every_event(per_message):
    recs = sample_records(10)
    messages = split_messages(recs, per_message)
    assert len(messages) == -(-10 // per_message)
    assert len(list(messages)) == len(messages)
    assert all(len(m) <= per_message * EVENT_SIZE for m in messages)
    decoded, poison = decode_bodies(list(messages))
    assert poison == [] and (decoded == recs).all()
    decoded, poison = decode_bodies(messages)  # the packed fast path
    assert poison == [] and (decoded == recs).all()


def test_packed_messages_behave_like_a_list_of_bodies():
    messages = split_messages(sample_records(5), 2)
    as_list = list(messages)
    assert [messages[i] for i in range(len(messages))] == as_list
    assert messages[-1] == as_list[-1]
    assert list(messages[1:]) == as_list[1:]
    assert list(pickle.loads(pickle.dumps(messages))) == as_list
    with pytest.raises(IndexError):
        messages[3]


@pytest.mark.parametrize("body", [b"", b"short", b"x" * 32, b"y" * 33])
def test_malformed_bodies_are_rejected(body):
    with pytest.raises(DecodeError):
        decode_body(body)


def test_a_batch_with_poison_keeps_the_good_messages_and_names_the_bad():
    good = list(split_messages(sample_records(4), 1))
    batch = [good[0], b"garbage", good[1], b"z" * 32, good[2], good[3]]
    decoded, poison = decode_bodies(batch)
    assert poison == [1, 3]
    assert decoded["seq"].tolist() == [0, 1, 2, 3]
