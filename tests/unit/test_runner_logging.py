"""What the runner logs: a queue it could not delete, by name; a consumer it killed."""

import logging
import uuid

from queues.backends.memory import MultiprocessBackend
from queues.errors import BackendUnavailable
from queues.run import runner as runner_module
from queues.run.result import RunStatus
from queues.run.runner import Faults, Runner
from queues.workload.spec import WorkloadSpec


class _Undeletable(MultiprocessBackend):
    """A server that is gone by the end of the run: every delete fails, however often the
    control connection is replaced."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.deletes = self.closes = 0

    def delete(self, queue):
        self.deletes += 1
        raise BackendUnavailable("memory-mp: server gone (simulated)")

    def close(self):
        self.closes += 1
        super().close()


def test_a_queue_left_behind_fails_the_run_with_its_counts_and_is_named_in_the_log(caplog, monkeypatch):
    monkeypatch.setattr(runner_module, "DELETE_PAUSE_S", 0.0)
    backend = _Undeletable()
    runner = Runner(WorkloadSpec(backend="memory-mp", events=1_000), backend, run_id=uuid.uuid4().hex[:8])
    with caplog.at_level(logging.ERROR, logger="queues.run.runner"):
        result = runner.run()
    # a bounded retry, each on a new control connection
    assert backend.deletes == runner_module.DELETE_ATTEMPTS and backend.closes >= runner_module.DELETE_ATTEMPTS
    assert result.status == RunStatus.FAILED and "\n" not in result.error
    assert (
        "server gone (simulated)" in result.error and f"{runner.queue} is left for `manage.py cleanup`" in result.error
    )
    assert result.summary["unique"] == 1_000 and result.summary["verdict"] == "exact"  # the counts are kept
    (record,) = [r for r in caplog.records if r.name == "queues.run.runner"]
    assert runner.queue in record.getMessage() and "server gone (simulated)" in record.getMessage()


def test_a_killed_consumer_is_logged(caplog):
    spec = WorkloadSpec(backend="memory-mp", events=20_000, batch=100, idle_timeout_s=2)
    runner = Runner(spec, MultiprocessBackend(), run_id=uuid.uuid4().hex[:8], faults=Faults(kill_consumer_after=2_000))
    with caplog.at_level(logging.WARNING, logger="queues.workers.supervision"):
        runner.run()
    assert any("killing consumer 0" in r.getMessage() for r in caplog.records if r.name == "queues.workers.supervision")
