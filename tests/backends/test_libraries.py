"""The task-library backends' own parts (``queues/backends/libraries``): what no contract test
shows. The contract suite runs them like every backend (``tests/contract``)."""

from __future__ import annotations

import importlib
import logging
import sys
import time
import uuid
from urllib.parse import urlsplit

import pytest

from queues.backends import backend_class
from queues.backends.libraries.base import LibraryBackend, LibraryConsumer
from queues.errors import BackendUnavailable
from queues.run.result import RunStatus
from queues.run.runner import Runner
from queues.workload.spec import WorkloadSpec
from tests.support.servers import backend_url, connected_backend


def test_a_missing_library_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "huey", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "queues.backends.libraries.huey_backend", raising=False)
    with pytest.raises(BackendUnavailable) as caught:
        importlib.import_module("queues.backends.libraries.huey_backend")
    message = str(caught.value)
    assert "huey" in message and "pip install -e '.[libraries]'" in message and "\n" not in message


class _BrokenLibrary(LibraryBackend):
    name = "broken-library"

    def probe(self, role: str) -> None:
        """No server to ask."""


class _Broken(LibraryConsumer):
    """A library worker that logs why it cannot start and returns, as Celery does."""

    def run_worker(self) -> None:
        logging.getLogger("some.library").error("cannot reach the broker: connection refused")

    def stop_worker(self) -> None:
        pass


def test_a_worker_that_ends_as_it_starts_is_reported_with_what_it_logged():
    backend = _BrokenLibrary(url="", namespace="imqtest")
    began = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        _Broken(backend, "imqtest.q")
    assert time.monotonic() - began < 5  # reported, not waited for
    assert "ended as it started: cannot reach the broker: connection refused" in str(caught.value)


def test_a_run_cancelled_midway_leaves_no_worker_behind():
    backend = connected_backend("huey")
    began = time.monotonic()
    runner = Runner(
        WorkloadSpec(backend="huey", rate_eps=200, duration_s=30, consumers=2),
        backend,
        run_id=uuid.uuid4().hex[:8],
        should_cancel=lambda: runner.ledger.unique >= 50 or time.monotonic() - began > 60,
    )
    result = runner.run()
    assert result.status == RunStatus.CANCELLED
    assert runner.supervisor.workers and all(w.dead() for w in runner.supervisor.workers)
    assert not backend_class("huey")(url=backend.url, namespace=backend.namespace).queue_exists(runner.queue)


@pytest.mark.parametrize("alias", ["huey", "dramatiq-rabbitmq"])
def test_an_experiments_faults_on_a_task_library_are_applied_and_judged(alias):
    """The faults an experiment declares (docs/how-to/faults.md) on a task library: its workers are
    killed, replaced and paused like any; what is lost or comes twice is what its guarantee
    allows (huey at-most-once, Dramatiq on RabbitMQ at-least-once), never a contradiction."""
    backend = connected_backend(alias)
    began = time.monotonic()
    spec = WorkloadSpec(
        backend=alias,
        rate_eps=200,
        duration_s=4,
        consumers=2,
        idle_timeout_s=3,
        replace_after_s=0.3,
        faults=("poison@0.5:1", "kill-consumer@1", "kill-producer@1.5", "pause-consumer@2.5:0.5:1"),
    )
    runner = Runner(spec, backend, run_id=uuid.uuid4().hex[:8], should_cancel=lambda: time.monotonic() - began > 120)
    result = runner.run()
    s = result.summary
    assert result.status == "succeeded", f"{result.status}: {result.error}"
    kinds = [(m["kind"], m["target"]) for m in s["markers"]]
    for expected in [("replaced", "consumer 0"), ("replaced", "producer 0"), ("resume", "consumer 1")]:
        assert expected in kinds, kinds
    assert s["poison"] == 1 and s["corrupt"] == 0
    assert s["guarantee"] == backend.capabilities.guarantee() and s["contradictions"] == [], s["contradictions"]
    if backend.capabilities.redelivers_on_crash:
        assert s["lost"] == 0 and s["unique_sum"] == spec.expected_sum, s


def test_a_celery_workers_loop_sends_what_it_queued_itself_without_waiting_for_a_timer():
    """kombu's loop reads a message in a callback it queued (its AMQP reader), and Celery queues
    the message's ack from there: the loop must poll without waiting while that ack is queued,
    or a worker holding its whole prefetch sleeps until the next timer (``prompt_hub``)."""
    import socket

    from kombu.asynchronous import Hub
    from kombu.asynchronous.timer import Timer

    from queues.backends.libraries.celery_backend import poll_at_once_while_callbacks_wait

    hub = Hub(Timer(max_interval=60))
    hub.call_repeatedly(60, lambda: None)  # the only timer: without the fix the poll waits 10 s (kombu's cap)
    poll_at_once_while_callbacks_wait(hub)
    reader, writer = socket.socketpair()
    acked: list[float] = []

    def ack() -> None:  # and the broker, acked, sends the next message
        acked.append(time.monotonic())
        writer.send(b"m")

    def read() -> None:  # as kombu's reader: takes the message, and the task's ack is queued
        reader.recv(1)
        hub.call_soon(ack)

    hub.add_reader(reader, lambda: hub.call_soon(read))
    loop = hub.create_loop()
    try:
        writer.send(b"m")
        began = time.monotonic()
        while not acked and time.monotonic() - began < 30:
            next(loop)
        assert acked, "the ack was never sent"
        assert acked[0] - began < 5, f"the ack waited {acked[0] - began:.1f} s for a timer"
    finally:
        hub.close()
        reader.close()
        writer.close()


def _django_q2_conf() -> dict:
    from django_q.conf import Conf  # reads Django's settings: pytest-django has set them up

    return {name: value for name, value in vars(Conf).items() if name.isupper()}


@pytest.mark.parametrize("alias", ["django-q2-orm", "django-q2-redis"])
def test_a_django_q2_backend_leaves_the_process_s_django_q2_as_it_found_it(alias, silent_port, django_db_blocker):
    """django-q2's ``Conf`` is global to the process, and this process is a Django project with
    a django-q2 broker of its own (the admin launches through it): a producer and a consumer of
    the backend, and a consumer whose server never answers, leave it as it was once closed.
    (A consumer that failed to start left it pointed at the silent server; every launch of the
    project's django-q2 in the same process then went to the backend's broker.)"""
    before = _django_q2_conf()
    with django_db_blocker.unblock():  # the ORM backend's tables are made on its own alias
        backend = connected_backend(alias)
        try:
            queue = f"{backend.namespace}.conf"
            backend.declare(queue)
            producer = backend.producer(queue)
            producer.send_batch([b"x"])
            producer.close()
            backend.consumer(queue).close()
            backend.delete(queue)
        finally:
            backend.close()
        silent = backend_class(alias)(
            url=backend_url(alias).replace(f":{urlsplit(backend_url(alias)).port}", f":{silent_port}"),
            namespace=f"imqtest-{uuid.uuid4().hex[:8]}",
            connect_timeout_s=2,
        )
        with pytest.raises(BackendUnavailable):
            silent.consumer(f"{silent.namespace}.q")
        silent.close()
    assert _django_q2_conf() == before
