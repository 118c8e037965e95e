"""What the runner logs: a queue it could not delete, by name; a consumer it killed."""

import logging
import uuid

from queues.backends.memory import MultiprocessBackend
from queues.errors import BackendUnavailable
from queues.runner import SUCCEEDED, Faults, Runner
from queues.workload import WorkloadSpec


class _Undeletable(MultiprocessBackend):
    def delete(self, queue):
        super().delete(queue)
        raise BackendUnavailable("memory-mp: server gone (simulated)")


def test_a_queue_left_behind_is_named_in_the_log(caplog):
    runner = Runner(WorkloadSpec(backend="memory-mp", events=1_000), _Undeletable(), run_id=uuid.uuid4().hex[:8])
    with caplog.at_level(logging.ERROR, logger="queues.runner"):
        result = runner.run()
    assert result.status == SUCCEEDED
    (record,) = [r for r in caplog.records if r.name == "queues.runner"]
    assert runner.queue in record.getMessage() and "server gone (simulated)" in record.getMessage()


def test_a_killed_consumer_is_logged(caplog):
    spec = WorkloadSpec(backend="memory-mp", events=20_000, batch=100, idle_timeout_s=2)
    runner = Runner(spec, MultiprocessBackend(), run_id=uuid.uuid4().hex[:8], faults=Faults(kill_consumer_after=2_000))
    with caplog.at_level(logging.WARNING, logger="queues.supervision"):
        runner.run()
    assert any("killing consumer 0" in r.getMessage() for r in caplog.records if r.name == "queues.supervision")
