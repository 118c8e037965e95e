"""The runner's own behaviour, on the in-memory backends and deliberately faulty ones."""

import time
import uuid

import numpy as np
import pytest

from queues.backends.memory import MultiprocessBackend, _PipeConsumer, _PipeProducer
from queues.errors import InvalidSpec
from queues.run.approaches import APPROACHES
from queues.run.launch import run_spec
from queues.run.result import RunStatus
from queues.run.runner import Runner
from queues.workload.spec import WorkloadSpec
from tests.support.doubles import ServerLostBackend


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


@pytest.fixture
def server_lost_for_good(monkeypatch):
    """Workers stop reconnecting after 0.3 s (inherited by the forked workers)."""
    from queues.workers import link

    monkeypatch.setattr(link, "RECONNECT_GIVE_UP_S", 0.3)


def test_a_server_lost_mid_run_fails_the_run_and_keeps_the_counts(server_lost_for_good):
    result = run(ServerLostBackend(), events=10_000, batch=100).run()
    assert result.status == RunStatus.FAILED
    assert "connection lost (simulated)" in result.error
    assert result.summary["unique"] == 300  # the three batches that were sent were counted
    assert result.summary["sum"] == 300 * 301 // 2  # and they were events 1..300, each once


def test_cancel_stops_the_run_and_keeps_the_counts():
    runner = run(SlowBackend(), events=100_000, batch=100, idle_timeout_s=30)
    runner.should_cancel = lambda: runner.ledger.unique >= 1_000
    began = time.monotonic()
    result = runner.run()
    assert result.status == RunStatus.CANCELLED
    assert time.monotonic() - began < 15  # the whole run would take at least 20 s
    assert 1_000 <= result.summary["unique"] < 100_000


def test_samples_report_depth_rates_and_latency_each_interval():
    runner = run(SlowBackend(), events=5_000, batch=100)
    runner.sample_interval_s = 0.2
    seen = []
    runner.on_sample = seen.append
    result = runner.run()
    assert result.status == RunStatus.SUCCEEDED and result.summary["verdict"] == "exact"
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

    runner = run(HalfLost(), events=1_000, batch=100, idle_timeout_s=0.5)
    result = runner.run()
    # memory-mp is at-most-once: a loss is a finding of the run, not a failure
    assert result.status == RunStatus.SUCCEEDED and result.error is None
    assert result.summary["verdict"] == "lost"
    assert result.summary["findings"][0].startswith("500 event(s) lost: memory-mp is at-most-once")
    # exactly the second half of each batch of 100 never arrived, and is what is reported
    received_ids = np.flatnonzero(runner.ledger.seen(np.arange(1_000))).tolist()
    assert received_ids == [i for i in range(1_000) if i % 100 < 50]
    assert result.summary["lost"] == 500 and result.ledger.lost_examples[0] == (0, 50)
    assert result.summary["sum"] == sum(i + 1 for i in received_ids)


@pytest.mark.parametrize("alias", sorted(APPROACHES))
def test_each_in_process_approach_sums_exactly(alias):
    result = run_spec(WorkloadSpec(backend=alias, events=3_000, batch=100), run_id="t")
    assert result.summary["verdict"] == "exact"
    assert result.summary["sum"] == 3_000 * 3_001 // 2
    assert result.summary["latency_ms"]["max"] >= result.summary["latency_ms"]["p50"] > 0


def test_single_threaded_approaches_refuse_several_workers():
    with pytest.raises(InvalidSpec, match="one thread"):
        run_spec(WorkloadSpec(backend="loop", events=10, consumers=2), run_id="t")


@pytest.mark.skipif(not hasattr(__import__("fcntl"), "F_SETPIPE_SZ"), reason="report pipes are enlarged on Linux only")
def test_a_stalled_runner_does_not_hold_up_the_consumers_drain():
    # 100 reports of 1000 events (~410 KB) fit in an enlarged report pipe but not in a 64 KB
    # one: the consumer must drain the queue while the runner's loop is stalled, and the drain
    # time (the consumer's own receipt stamps) must not contain the stall
    stall_s = 3.0
    stalled = []

    def stall_once(_unique, _events):
        if not stalled:
            stalled.append(True)
            time.sleep(stall_s)

    spec = WorkloadSpec(backend="memory-mp", events=100_000)
    runner = Runner(spec, MultiprocessBackend(), run_id=uuid.uuid4().hex[:8], on_progress=stall_once)
    result = runner.run()
    assert stalled
    assert result.summary["verdict"] == "exact" and result.summary["sum"] == spec.expected_sum
    assert result.summary["duration_s"] < stall_s, result.summary["duration_s"]


def test_a_loss_on_a_backend_that_declares_at_least_once_fails_the_run():
    class LosesAcked(MultiprocessBackend):
        # claims redelivery it does not have: the run must not call the loss a success
        capabilities = MultiprocessBackend.capabilities.extend(acks=True, redelivers_on_crash=True)

        def producer(self, queue):
            inner = _PipeProducer(self._get(queue))

            class Dropper:
                def send_batch(self, messages):
                    inner.send_batch(messages[: len(messages) // 2])

                def close(self):
                    inner.close()

            return Dropper()

    result = run(LosesAcked(), events=1_000, batch=100, idle_timeout_s=0.5).run()
    assert (
        result.status == RunStatus.FAILED
        and result.error == "500 event(s) lost on an at-least-once backend (memory-mp)"
    )
    assert result.summary["lost"] == 500 and result.summary["findings"] == []
    assert result.summary["status"] == RunStatus.FAILED and result.summary["stuck"] == 0
