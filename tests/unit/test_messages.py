"""Worker messages: what a worker sends arrives as the same typed message, through a real pipe."""

import multiprocessing
import pickle

import pytest

from queues.workers.channel import ReportChannel, receive
from queues.workers.reports import BatchReport, Done, Histograms, Ready, WorkerFailed, from_wire, to_wire

MESSAGES = [
    Ready("producer", 0, 1234),
    BatchReport(1, b"\x00\x00\x00\x00\x05\x00\x00\x00", 7, 1, 2, 1_700_000_000_000_000_000, {"e2e": b"hist"}),
    BatchReport(0, b"", 0, 0, 3, 5),
    Histograms("consumer", 2, {"e2e": b"a", "from_send": b"b"}),
    Done("producer", 1, 900, 1_700_000_000_000_000_000),
    Done("consumer", 0),
    WorkerFailed("consumer", 3, "BackendUnavailable: connection lost"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_a_message_survives_the_wire_and_keeps_its_type(message):
    back = from_wire(pickle.loads(pickle.dumps(to_wire(message))))
    assert back == message and type(back) is type(message)


def test_messages_cross_a_report_channel_between_processes_in_order():
    ctx = multiprocessing.get_context("fork")
    channel = ReportChannel(ctx)

    def send_all():
        for message in MESSAGES:
            channel.send(message)

    child = ctx.Process(target=send_all)
    child.start()
    channel.writer.close()
    received = [receive(channel.reader) for _ in MESSAGES]
    child.join(timeout=10)
    assert received == MESSAGES
    with pytest.raises(EOFError):  # the worker is gone: the runner's sign to check its death
        receive(channel.reader)


def test_messages_are_frozen_and_matched_by_type():
    report = MESSAGES[1]
    with pytest.raises(AttributeError):
        report.raw_sum = 0
    match report:
        case BatchReport(index=index, raw_sum=raw_sum):
            assert (index, raw_sum, report.role) == (1, 7, "consumer")
        case _:
            pytest.fail("a BatchReport did not match its type")
    assert WorkerFailed("producer", 0, "boom").describe() == "producer 0: boom"
