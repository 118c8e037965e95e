"""A run on a server that accepts connections and never answers fails within about one
``connect_timeout_s``: the cleanup before the run connects within the run's timeout (not a fixed
3 s of its own), and a server that did not answer it fails the run at once rather than being
waited for a second time. No real server: the ``silent_port`` listener plays the silent one."""

from __future__ import annotations

import time

import pytest

from experiments.models import Run
from experiments.services.runs import run_execute, run_prepare
from queues.workload.spec import WorkloadSpec

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT_S = 1.0
#: What each backend's URL setting looks like when it points at the silent listener.
SILENT = {
    "redis-list": ("IMQ_REDIS_URL", "redis://127.0.0.1:{port}/0"),
    "rabbitmq": ("IMQ_AMQP_URL", "amqp://guest:pw@127.0.0.1:{port}/%2F"),
}


@pytest.mark.parametrize("alias", sorted(SILENT))
def test_a_silent_server_fails_the_run_within_about_one_connect_timeout(alias, silent_port, settings):
    setting, url = SILENT[alias]
    settings.IMQ_URLS = {**settings.IMQ_URLS, setting: url.format(port=silent_port)}
    run = run_prepare(
        spec=WorkloadSpec(backend=alias, events=100),
        experiment_name="silent",
        options={"connect_timeout_s": TIMEOUT_S},
    )
    began = time.monotonic()
    run = run_execute(run=run)
    took_s = time.monotonic() - began
    assert run.status == Run.Status.FAILED and f"{alias}: cannot connect to " in run.error, run.error
    assert f"set {setting}" in run.error and "\n" not in run.error
    # twice the timeout plus a fixed 3 s before; one timeout now, with a margin for a loaded machine
    assert took_s < 2.5 * TIMEOUT_S, f"{alias}: the run failed after {took_s:.1f} s with connect_timeout_s=1"
