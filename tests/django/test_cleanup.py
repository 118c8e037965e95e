"""``cleanup`` removes only the queues of ended runs of this database, and marks failed only the
runs whose executor is gone: never a running run's queue, another namespace's, or an unknown one."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid

import pytest
from django.utils import timezone

from experiments.models import Experiment, Run
from experiments.services.cleanup import STALE_ERROR, executor_alive, leftovers_remove
from tests.support.messages import bodies
from tests.support.servers import connected_backend

SERVER_BACKENDS = ["postgres", "postgres-notify", "mysql", "redis-list", "redis-stream", "rabbitmq"]


def reaped_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def make_run(alias, namespace, *, ended, pid=None):
    experiment, _ = Experiment.objects.get_or_create(name="cleanup", defaults={"backend": alias})
    run = Run.objects.create(
        experiment=experiment, spec={"backend": alias}, status="running", started_at=timezone.now()
    )
    run.queue_name = f"{namespace}.r{run.pk}-{uuid.uuid4().hex[:6]}"
    run.executor_host, run.executor_pid = socket.gethostname(), pid or os.getpid()
    if ended:
        run.status, run.finished_at = "succeeded", timezone.now()
    run.save()
    return run


def put(backend, queue):
    backend.declare(queue)
    producer = backend.producer(queue)
    producer.send_batch(bodies(3))
    producer.close()


@pytest.mark.django_db
@pytest.mark.parametrize("alias", SERVER_BACKENDS)
def test_cleanup_removes_only_the_queues_of_ended_runs(alias):
    backend = connected_backend(alias)  # a namespace of its own: nothing else on the server is seen
    ns = backend.namespace
    ended, running = make_run(alias, ns, ended=True), make_run(alias, ns, ended=False)
    stale = make_run(alias, ns, ended=False, pid=reaped_pid())
    unknown = f"{ns}.r999999-abcdef"  # a run of another database sharing the server
    for queue in (ended.queue_name, running.queue_name, stale.queue_name, unknown):
        put(backend, queue)
    try:
        dry = leftovers_remove(backends=[alias], namespace=ns, dry_run=True)
        assert dry.stale == [stale.pk] and Run.objects.get(pk=stale.pk).status == "running"
        assert backend.queue_exists(ended.queue_name)

        report = leftovers_remove(backends=[alias], namespace=ns)
        assert report.unreachable == {}
        assert report.stale == [stale.pk]
        assert sorted(q for _, q, _ in report.removed) == sorted([ended.queue_name, stale.queue_name])
        if alias != "rabbitmq":  # AMQP cannot list: only the names on runs are looked at
            assert set(report.left_alone) == {running.queue_name, unknown}
        assert not backend.queue_exists(ended.queue_name) and not backend.queue_exists(stale.queue_name)
        assert backend.queue_exists(running.queue_name) and backend.queue_exists(unknown)
        stale.refresh_from_db()
        assert (stale.status, stale.error) == ("failed", STALE_ERROR) and stale.finished_at is not None
        assert Run.objects.get(pk=running.pk).status == "running"
        assert Run.objects.get(pk=ended.pk).queue_removed

        again = leftovers_remove(backends=[alias], namespace=ns)
        assert again.removed == [] and again.stale == []
    finally:
        for queue in (running.queue_name, unknown, ended.queue_name, stale.queue_name):
            backend.delete(queue)
        backend.close()


def test_an_executor_is_alive_only_while_its_process_runs():
    now = timezone.now()
    assert executor_alive(pid=os.getpid(), started_at=now)
    assert not executor_alive(pid=reaped_pid(), started_at=now)
    # a process started well after the run is another one that reused the pid
    assert not executor_alive(pid=os.getpid(), started_at=now - timezone.timedelta(days=3650))


@pytest.mark.django_db
def test_cleanup_removes_a_private_server_whose_run_is_gone(tmp_path, monkeypatch, capsys):
    """A runner SIGKILLed with a private server (restart-server) leaves its directory: the
    server died with it (tests/backends/test_private_servers.py), ``cleanup`` removes the rest."""
    import tempfile

    from django.core.management import call_command

    from queues.faults.servers import DIR_PREFIX, OWNER_FILE

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale, live = tmp_path / f"{DIR_PREFIX}redis-stale", tmp_path / f"{DIR_PREFIX}redis-live"
    for directory, owner in ((stale, reaped_pid()), (live, os.getpid())):
        directory.mkdir()
        (directory / OWNER_FILE).write_text(f"{owner} 0" if owner != os.getpid() else str(owner))
    call_command("cleanup", "--backend", "memory", "--dry-run")
    assert f"would remove the private server {stale}" in capsys.readouterr().out and stale.exists()
    call_command("cleanup", "--backend", "memory")
    out = capsys.readouterr().out
    assert f"removed the private server {stale}" in out and str(live) not in out
    assert not stale.exists() and live.exists()
