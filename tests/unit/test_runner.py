"""The runner's own behaviour, on the in-memory backends and deliberately faulty ones."""

import time
import uuid

import pytest

from queues.approaches import APPROACHES
from queues.backends.memory import MultiprocessBackend, _PipeConsumer, _PipeProducer
from queues.errors import BackendUnavailable, InvalidSpec
from queues.launch import run_spec
from queues.runner import CANCELLED, FAILED, SUCCEEDED, Runner
from queues.workload import WorkloadSpec


class _BrokenAfter(_PipeProducer):
    """Sends ``limit`` batches, then fails as a driver would when the server goes away."""

    limit = 3

    def send_batch(self, messages):
        self.sent = getattr(self, "sent", 0) + 1
        if self.sent > self.limit:
            time.sleep(0.5)  # let the consumer count what was sent, so the test can check it
            raise BackendUnavailable("memory-mp: connection lost (simulated)")
        super().send_batch(messages)


class ServerLostBackend(MultiprocessBackend):
    def producer(self, queue):
        return _BrokenAfter(self._get(queue))


class _Slow(_PipeConsumer):
    def receive_batch(self, max_messages, timeout_s):
        time.sleep(0.02)
        return super().receive_batch(max_messages, timeout_s)


class SlowBackend(MultiprocessBackend):
    def consumer(self, queue, *, group="default"):
        return _Slow(self._get(queue))


def run(backend, **fields):
    spec = WorkloadSpec(backend="memory-mp", **fields)
    return Runner(spec, backend, run_id=uuid.uuid4().hex[:8])


def test_a_server_lost_mid_run_fails_the_run_and_keeps_the_counts():
    result = run(ServerLostBackend(), events=10_000, batch=100).run()
    assert result.status == FAILED
    assert "connection lost (simulated)" in result.error
    assert result.summary["unique"] == 300  # the three batches that were sent were counted
    assert result.summary["lost"] == 10_000 - 300


def test_cancel_stops_the_run_and_keeps_the_counts():
    runner = run(SlowBackend(), events=100_000, batch=100, idle_timeout_s=30)
    runner.should_cancel = lambda: runner.ledger.unique >= 1_000
    began = time.monotonic()
    result = runner.run()
    assert result.status == CANCELLED
    assert time.monotonic() - began < 10
    assert 1_000 <= result.summary["unique"] < 100_000


def test_samples_report_depth_rates_and_latency_each_interval():
    runner = run(SlowBackend(), events=5_000, batch=100)
    runner.sample_interval_s = 0.2
    seen = []
    runner.on_sample = seen.append
    result = runner.run()
    assert result.status == SUCCEEDED and result.summary["verdict"] == "exact"
    assert len(seen) >= 3 and seen == result.samples
    assert [s.t_s for s in seen] == sorted(s.t_s for s in seen)
    assert seen[-1].consumed == 5_000 and seen[-1].produced == 5_000
    assert all(isinstance(s.depth, int) for s in seen)
    assert any(s.depth > 0 for s in seen[:-1])  # the slow consumer let a backlog build up
    assert any(s.latency_ms and s.latency_ms["p99"] > 0 for s in seen)
    assert sum(s.consume_eps * 0.2 for s in seen[:-1]) > 0


def test_a_run_that_idles_out_reports_what_was_lost():
    # producers send everything, but the second half never reaches the queue
    class HalfLost(MultiprocessBackend):
        def producer(self, queue):
            inner = _PipeProducer(self._get(queue))

            class Dropper:
                def send_batch(self, messages):
                    if messages[0][4:8] != b"\xff\xff\xff\xff":
                        inner.send_batch(messages[: len(messages) // 2])

                def close(self):
                    inner.close()

            return Dropper()

    result = run(HalfLost(), events=1_000, batch=100, idle_timeout_s=0.5).run()
    assert result.status == SUCCEEDED
    assert result.summary["verdict"] == "lost"
    assert result.summary["lost"] == 500 and result.summary["unique"] == 500
    assert result.ledger.lost_examples[0] == (0, 50)


@pytest.mark.parametrize("alias", sorted(APPROACHES))
def test_each_in_process_approach_sums_exactly(alias):
    result = run_spec(WorkloadSpec(backend=alias, events=3_000, batch=100), run_id="t")
    assert result.summary["verdict"] == "exact"
    assert result.summary["sum"] == 3_000 * 3_001 // 2
    assert result.summary["latency_ms"]["max"] >= result.summary["latency_ms"]["p50"] > 0


def test_single_threaded_approaches_refuse_several_workers():
    with pytest.raises(InvalidSpec, match="one thread"):
        run_spec(WorkloadSpec(backend="loop", events=10, consumers=2), run_id="t")
