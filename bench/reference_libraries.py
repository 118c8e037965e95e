"""Minimal scripts of each task library, for ``bench_libraries.py``: enqueue N tasks (one per
event) through the library's API, a no-op-plus-add task, the library's own worker in each of W
forked processes (as its command runs it, on the process's main thread), wait for the count.

Each library's worker is configured as the imqueue backend configures it (Celery: solo pool, no
mingle, gossip, heartbeat or remote control, no results, and the backend's loop fix while its
option ``prompt_hub`` is on, as by default; Dramatiq: one worker thread; huey: one
thread worker; procrastinate: concurrency 1), so the ratio measures imqueue's harness, not a
different setup. Timed from the first enqueue until the workers counted every task.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from typing import Any

TOTAL: Any = None  # the add task's sum and count, shared with the forked workers
DONE: Any = None
OPTIONS: dict[str, Any] = {}  # the backend's options of the run (``run_reference``), seen by the forked workers
READY_TIMEOUT_S = 60.0


def add(x: int) -> None:
    """The task: add ``x`` (what imqueue's consumers do with an event, without the ledger)."""
    with TOTAL.get_lock():
        TOTAL.value += x
    with DONE.get_lock():
        DONE.value += 1


def rq_add(x: int) -> None:  # importable by path, as RQ wants
    add(x)


# -- each library: app(url, queue) -> (enqueue(x), close()), work(url, queue, ready) ----------------


def celery_app(url: str, queue: str) -> Any:
    import celery

    app = celery.Celery("ref", broker=url, set_as_current=False)
    options = {"global_keyprefix": f"{queue}:"} if url.startswith("redis") else {}
    app.conf.update(
        task_default_queue=queue,
        broker_transport_options=options,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,
        task_ignore_result=True,
    )
    app.task(name="ref_add", shared=False)(add)
    return app


def celery_producer(url: str, queue: str) -> tuple[Any, Any]:
    app = celery_app(url, queue)
    task = app.tasks["ref_add"]
    return (lambda x: task.apply_async((x,))), app.close


def celery_work(url: str, queue: str, ready: Any) -> None:
    from celery.signals import worker_ready

    app = celery_app(url, queue)

    def on_ready(sender: Any, **_: Any) -> None:
        if OPTIONS.get("prompt_hub", True):  # as the backend does by default (``prompt_hub``)
            from queues.backends.libraries.celery_backend import STOP_CHECK_S, poll_at_once_while_callbacks_wait

            # the backend's worker has its stop timer; the fix takes effect where a timer is scheduled
            sender.hub.call_repeatedly(STOP_CHECK_S, lambda: None)
            poll_at_once_while_callbacks_wait(sender.hub)
        ready.set()

    worker_ready.connect(on_ready, weak=False)
    app.set_current()
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            "-Q",
            queue,
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ]
    )


def dramatiq_broker(url: str, queue: str) -> Any:
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=url, namespace=f"dramatiq:{queue}") if url.startswith("redis") else RabbitmqBroker(url=url)
    actor = dramatiq.Actor(
        add, broker=broker, actor_name="ref_add", queue_name=queue, priority=0, options={"max_retries": 0}
    )
    return broker, actor


def dramatiq_producer(url: str, queue: str) -> tuple[Any, Any]:
    broker, actor = dramatiq_broker(url, queue)
    return actor.send, broker.close


def dramatiq_work(url: str, queue: str, ready: Any) -> None:
    import dramatiq

    from queues.backends.libraries.dramatiq_backend import WORKER_TIMEOUT_MS

    broker, _ = dramatiq_broker(url, queue)
    worker = dramatiq.Worker(broker, queues={queue}, worker_threads=1, worker_timeout=WORKER_TIMEOUT_MS)
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    worker.start()
    ready.set()
    while not stop[0]:
        time.sleep(0.05)
    worker.stop()


def rq_producer(url: str, queue: str) -> tuple[Any, Any]:
    import redis
    import rq

    conn = redis.Redis.from_url(url)
    q = rq.Queue(queue, connection=conn)
    return (lambda x: q.enqueue(rq_add, x)), conn.close


def rq_work(url: str, queue: str, ready: Any) -> None:
    import redis
    import rq
    from rq.worker import SimpleWorker

    conn = redis.Redis.from_url(url)
    worker = SimpleWorker([rq.Queue(queue, connection=conn)], connection=conn)
    ready.set()
    worker.work(logging_level="WARNING")


def huey_app(url: str, queue: str) -> tuple[Any, Any]:
    import huey

    from queues.backends.libraries.huey_backend import READ_TIMEOUT_S

    app = huey.RedisHuey(name=queue, url=url, clean_name=False, read_timeout=READ_TIMEOUT_S)
    return app, app.task(name="ref_add")(add)


def huey_producer(url: str, queue: str) -> tuple[Any, Any]:
    app, task = huey_app(url, queue)
    return task, (lambda: None)


def huey_work(url: str, queue: str, ready: Any) -> None:
    app, _ = huey_app(url, queue)
    consumer = app.create_consumer(workers=1, worker_type="thread", periodic=False)
    ready.set()
    consumer.run()


def procrastinate_app(url: str, sync: bool) -> tuple[Any, Any]:
    import procrastinate

    from queues.backends.libraries.procrastinate_backend import SCHEMA

    conninfo = f"{url}?options=-c%20search_path%3D{SCHEMA}"
    connector = (
        procrastinate.SyncPsycopgConnector(conninfo=conninfo)
        if sync
        else procrastinate.PsycopgConnector(conninfo=conninfo)
    )
    app = procrastinate.App(connector=connector)

    def ref_add(x: int) -> None:
        add(x)

    return app, app.task(name="ref_add")(ref_add)


def procrastinate_producer(url: str, queue: str) -> tuple[Any, Any]:
    app, task = procrastinate_app(url, sync=True)
    app.open()
    task = task.configure(queue=queue)
    return (lambda x: task.defer(x=x)), app.close


def procrastinate_work(url: str, queue: str, ready: Any) -> None:
    app, _ = procrastinate_app(url, sync=False)
    ready.set()
    app.run_worker(queues=[queue], concurrency=1)


def djangoq_setup(alias: str, url: str) -> Any:
    """django-q2 configured as the imqueue backend configures it (its broker, its defaults)."""
    from queues.backends import backend_class

    backend = backend_class(alias)(url=url, namespace="imqref")
    backend.prepare_process("reference")
    return backend


def djangoq_producer_for(alias: str) -> Any:
    def make(url: str, queue: str) -> tuple[Any, Any]:
        backend = djangoq_setup(alias, url)
        from django_q.tasks import async_task

        broker = backend.broker(queue)
        return (
            lambda x: async_task("bench.reference_libraries.add", x, q_options={"broker": broker, "save": False})
        ), (lambda: None)

    return make


def djangoq_work(url: str, queue: str, ready: Any, alias: str = "") -> None:
    """``qcluster`` with one worker: django-q2's own cluster (a sentinel forking a pusher, a
    worker and a monitor), started through its API."""
    backend = djangoq_setup(alias, url)  # Django configured before django_q's models are imported
    from django_q.cluster import Cluster
    from django_q.conf import Conf

    Conf.WORKERS = 1
    cluster = Cluster(backend.broker(queue))
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    cluster.start()
    ready.set()
    while not stop[0]:
        time.sleep(0.05)
    cluster.stop()


LIBRARIES = {
    "celery-redis": (celery_producer, celery_work),
    "celery-rabbitmq": (celery_producer, celery_work),
    "dramatiq-redis": (dramatiq_producer, dramatiq_work),
    "dramatiq-rabbitmq": (dramatiq_producer, dramatiq_work),
    "rq": (rq_producer, rq_work),
    "huey": (huey_producer, huey_work),
    "procrastinate": (procrastinate_producer, procrastinate_work),
    "django-q2-orm": (
        djangoq_producer_for("django-q2-orm"),
        lambda url, queue, ready: djangoq_work(url, queue, ready, "django-q2-orm"),
    ),
    "django-q2-redis": (
        djangoq_producer_for("django-q2-redis"),
        lambda url, queue, ready: djangoq_work(url, queue, ready, "django-q2-redis"),
    ),
}


def _worker_main(work: Any, url: str, queue: str, ready: Any) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    work(url, queue, ready)


def run_reference(
    alias: str, url: str, events: int, workers: int, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Enqueue ``events`` tasks, wait until ``workers`` worker processes counted them all, with the
    worker configured as the backend with ``options`` configures it (only Celery's ``prompt_hub``
    changes the script)."""
    global TOTAL, DONE, OPTIONS
    from queues.backends import backend_class

    ctx = multiprocessing.get_context("fork")
    TOTAL, DONE = ctx.Value("q", 0), ctx.Value("q", 0)
    queue = f"imqref.{uuid.uuid4().hex[:8]}"
    make_producer, work = LIBRARIES[alias]
    # declares, and deletes at the end; its options parsed and checked, for the workers to read
    control = backend_class(alias)(url=url, namespace="imqref", **dict(options or {}))
    OPTIONS = dict(control.option_values)
    control.connect()
    control.declare(queue)
    readies = [ctx.Event() for _ in range(workers)]
    # not daemonic: a django-q2 cluster forks its own processes (stopped by SIGTERM, killed if need be)
    procs = [ctx.Process(target=_worker_main, args=(work, url, queue, ready)) for ready in readies]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        for ready in readies:
            if not ready.wait(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"{alias} reference: a worker did not start")
        enqueue, close = make_producer(url, queue)
        began = time.perf_counter()
        for x in range(1, events + 1):
            enqueue(x)
        while DONE.value < events:
            if not all(p.is_alive() for p in procs):
                raise RuntimeError(f"{alias} reference: a worker died")
            time.sleep(0.001)
        seconds = time.perf_counter() - began
        close()
        assert TOTAL.value == events * (events + 1) // 2, (TOTAL.value, events)
        return {"seconds": round(seconds, 4), "events_per_s": round(events / seconds, 1)}
    finally:
        for p in procs:
            if p.pid:
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
        # the control connection sat idle through the run (an AMQP heartbeat may have ended it)
        control.reconnecting(control.delete, queue, attempts=3, pause_s=1.0)
        control.close()
