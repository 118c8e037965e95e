"""Deliberately faulty backends, importable by a dotted path: a test registers one in
``queues.backends.BACKENDS`` (``"tests.support.doubles.ServerLostBackend"``), and the runner or a
command loads it as it loads a real one."""

from __future__ import annotations

import multiprocessing
import time

from queues.backends.memory import MultiprocessBackend, _PipeConsumer, _PipeProducer
from queues.errors import BackendUnavailable


class _BrokenAfter(_PipeProducer):
    """Sends ``limit`` batches, then fails as a driver would when the server goes away: once
    the consumer has acked what was sent (a consumer reports a batch to the runner before it
    acks it), so that the test knows exactly what was counted before the failure."""

    limit = 3

    def __init__(self, *args, acked, server_gone):
        super().__init__(*args)
        self.acked, self.sent_batches, self.sent_messages = acked, 0, 0
        self.server_gone = server_gone

    def send_batch(self, messages):
        if self.sent_batches == self.limit:
            deadline = time.monotonic() + 30
            while self.acked.value < self.sent_messages and time.monotonic() < deadline:
                time.sleep(0.005)  # polling a shared counter: no pytest helpers in a forked worker
            self.server_gone.value = 1  # and it stays gone: the producer's reconnects are refused
            raise BackendUnavailable("memory-mp: connection lost (simulated)")
        super().send_batch(messages)
        self.sent_batches, self.sent_messages = self.sent_batches + 1, self.sent_messages + len(messages)


class _AckCounting(_PipeConsumer):
    def __init__(self, *args, acked):
        super().__init__(*args)
        self.acked = acked

    def ack(self, batch):
        super().ack(batch)
        with self.acked.get_lock():
            self.acked.value += len(batch)


class ServerLostBackend(MultiprocessBackend):
    """Its server goes away for good after three batches: a producer's connection is lost, and
    every new one is refused, so the producer's reconnecting gives up (``server_lost_for_good``
    makes that take 0.3 s instead of ``RECONNECT_GIVE_UP_S``)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        context = multiprocessing.get_context("fork")
        self.acked = context.Value("q", 0)  # shared with the forked workers
        self.server_gone = context.Value("b", 0)

    def producer(self, queue):
        if self.server_gone.value:
            raise BackendUnavailable("memory-mp: connection lost (simulated): refused")
        return _BrokenAfter(self._get(queue), acked=self.acked, server_gone=self.server_gone)

    def consumer(self, queue, *, group="default"):
        return _AckCounting(self._get(queue), acked=self.acked)
