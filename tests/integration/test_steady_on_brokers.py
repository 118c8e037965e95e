"""A steady run end to end on real servers: the engine's schedule over a real broker.

Behaviour only, with margins a loaded 2-core machine still meets: rates and latencies are
measured in bench/, not asserted here."""

import uuid

import pytest

from queues.run.result import RunStatus
from queues.run.runner import Runner
from queues.workload.spec import WorkloadSpec
from tests.support.servers import connected_backend


@pytest.mark.parametrize("alias", ["redis-stream", "rabbitmq"])
def test_a_steady_run_on_a_real_broker_follows_the_schedule_and_sums_exactly(alias):
    backend = connected_backend(alias)
    spec = WorkloadSpec(backend=alias, rate_eps=2_000, duration_s=2.0, warmup_s=0.5, consumers=2)
    result = Runner(spec, backend, run_id=uuid.uuid4().hex[:8], sample_interval_s=0.5).run()
    s = result.summary
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert s["verdict"] == "exact" and s["sum"] == spec.expected_sum == 5_000 * 5_001 // 2
    # never ahead of the schedule; behind it by no more than a loaded machine could be
    assert 2_000 / 2 <= s["send_eps"] <= 2_000
    assert s["latency_ms"]["p50"] > 0 and s["send_delay_ms"]["max"] is not None
    assert isinstance(s["kept_up"], bool)  # the verdict itself depends on the load: see test_steady
    assert result.samples and all(isinstance(sample.depth, int) for sample in result.samples)


def test_a_steady_redis_stream_stays_trimmed_and_shows_its_length():
    backend = connected_backend("redis-stream")  # trims every second (the default)
    spec = WorkloadSpec(backend="redis-stream", rate_eps=20_000, duration_s=3.0)
    result = Runner(spec, backend, run_id=uuid.uuid4().hex[:8], sample_interval_s=0.5).run()
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert result.summary["verdict"] == "exact"
    details = [sample.depth_detail for sample in result.samples]
    assert all(d is not None and isinstance(d["stream_length"], int) for d in details)
    # entries acked and still stored: at most about a trim interval's worth, never the run's
    # whole flow (which 10,000 trimmed a second let grow by half)
    assert max(d["stream_length"] - d["total"] for d in details) <= 2 * spec.rate_eps


def test_rabbitmq_samples_show_ready_and_unacked_apart():
    backend = connected_backend("rabbitmq")
    spec = WorkloadSpec(backend="rabbitmq", rate_eps=1_000, duration_s=1.0)
    result = Runner(spec, backend, run_id=uuid.uuid4().hex[:8], sample_interval_s=0.5).run()
    assert result.status == RunStatus.SUCCEEDED, result.error
    for sample in result.samples:
        detail = sample.depth_detail
        assert detail is not None and {"ready", "unacked", "consumers", "total"} <= set(detail)
        assert sample.depth == detail["total"] == detail["ready"] + (detail["unacked"] or 0)
