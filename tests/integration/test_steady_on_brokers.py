"""A steady run end to end on real servers: the engine's schedule over a real broker."""

import uuid

import pytest

from queues.runner import SUCCEEDED, Runner
from queues.workload import WorkloadSpec
from tests.services import connected_backend


@pytest.mark.parametrize("alias", ["redis-stream", "rabbitmq"])
def test_a_steady_run_on_a_real_broker_keeps_up_and_sums_exactly(alias):
    backend = connected_backend(alias)
    spec = WorkloadSpec(backend=alias, rate_eps=2_000, duration_s=2.0, warmup_s=0.5, consumers=2)
    result = Runner(spec, backend, run_id=uuid.uuid4().hex[:8], sample_interval_s=0.5).run()
    s = result.summary
    assert result.status == SUCCEEDED, result.error
    assert s["verdict"] == "exact" and s["sum"] == spec.expected_sum
    assert s["send_eps"] == pytest.approx(2_000, rel=0.01)
    assert s["kept_up"] is True
    assert 0 < s["latency_ms"]["p50"] < 50
    assert any(sample.depth is not None for sample in result.samples)
