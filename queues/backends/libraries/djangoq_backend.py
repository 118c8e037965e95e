"""``django-q2-orm`` and ``django-q2-redis``: django-q2's cluster pipeline inside each imqueue consumer.

django-q2 is a Django app: this is the one module of ``queues`` that imports Django (the import
contract in ``pyproject.toml`` allows it), so that ``queues`` runs without Django wherever
django-q2 is not used (a worker machine runs it with only a broker client). The registry names
this module by its dotted path and imports it only when one of these backends is used. Where
Django is not configured yet (a script, a bench), it is configured here with a minimal settings
module: ``django_q`` alone, no default database, a signing key. The ORM broker's control
connection is the one of every library on PostgreSQL (``postgres_control``).

- Broker: django-q2's ORM broker on PostgreSQL (``IMQ_POSTGRES_URL``; its tables in a schema of
  their own, ``imq_djangoq``, created with django-q2's migrations on first use, through a
  database alias of their own, ``imq_djangoq``) or its Redis broker (``IMQ_REDIS_URL``). The
  run's queue is django-q2's ``list_key``.
- Producer: ``async_task(func, body)`` (django-q2 pickles and signs the task), one per message;
  django-q2 has no batch enqueue, so no ``batch_api``. Results are not saved (``save=False``):
  imqueue counts the tasks itself, and the default database may be another one (the project's).
- Consumer: django-q2's cluster is a sentinel process that forks a pusher, workers and a
  monitor. Each imqueue consumer runs that pipeline's own functions (``pusher``, ``worker``,
  ``monitor``, with its queues) on threads of the consumer process, one worker each:
  ``--consumers N`` is N pipelines (a ``qcluster`` with N workers shares one pusher and one
  monitor). A SIGKILL of the consumer kills the task with its pusher and monitor.
- Guarantee: the ORM broker locks a task row for ``retry`` (60 s) and deletes it once the
  monitor acknowledged it after the task returned; a killed worker's row comes back only after
  60 s, after the run: lost for the run (and ``stuck`` in the depth). The Redis broker pops a
  task (``BLPOP``): a killed worker's task is lost. imqueue cannot give a task's message back
  or set it aside apart from the task's outcome (django-q2 keeps no dead letters), so both
  declare ``acks=False``: what imqueue gives back is enqueued again, what it sets aside dropped.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import threading
from typing import Any

import psycopg
import redis

from queues.backends.base import CONNECT_TIMEOUT, Consumer, Producer
from queues.backends.libraries.base import (
    CURRENT,
    LIBRARY,
    REQUEUE,
    LibraryBackend,
    LibraryConsumer,
    LibraryProducer,
    missing_library,
)
from queues.backends.libraries.postgres_control import PostgresLibraryBackend
from queues.backends.libraries.redis_keys import RedisLibraryBackend, glob_escape

try:
    # only what imports before Django is configured: django_q's modules read the settings as
    # they are imported, so the functions that use them import them after ``ensure_django``
    import django
    import django_q
    from django.conf import settings
    from django.db import connections
except ImportError as exc:
    raise missing_library("django-q2", exc) from exc

ALIAS = SCHEMA = "imq_djangoq"
TASK = "queues.backends.libraries.djangoq_backend.djangoq_task"
#: Taken while the schema is created (``schema_locked``).
SCHEMA_LOCK = 0x1A51_0002
#: django-q2's defaults for what its pipeline reads from ``Conf`` (a project's ``Q_CLUSTER``,
#: tuned for running experiments, must not change what is measured).
CONF_DEFAULTS = {
    "RETRY": 60,
    "TIMEOUT": None,
    "BULK": 1,
    "POLL": 0.2,
    "RECYCLE": 500,
    "MAX_RSS": None,
    "ACK_FAILURES": False,
    "SAVE_LIMIT": 250,
    "CATCH_UP": True,
}
STOP = "STOP"
#: The pusher's longest dequeue: the Redis broker's BLPOP waits 1 s, the ORM's poll 0.2 s.
PUSHER_STOP_S = 2.0
_SETUP_LOCK = threading.Lock()


def djangoq_task(body: bytes) -> None:
    """The task: hand the message to the imqueue consumer of this pipeline (django-q2 pickles
    the arguments: the body travels as the bytes it is)."""
    consumer = CURRENT.get()
    if consumer.deliver(body) == REQUEUE:
        consumer.backend.enqueue(consumer.queue, body)  # type: ignore[attr-defined]
    # a dead letter is dropped: django-q2 keeps none (see the module's docstring)


def ensure_django() -> None:
    """Configure Django with the minimal settings django-q2 needs, unless it already is."""
    with _SETUP_LOCK:
        if not settings.configured:
            settings.configure(
                INSTALLED_APPS=["django_q"],
                DATABASES={},
                USE_TZ=True,
                SECRET_KEY="imqueue-django-q2-backend",
                # timeout below retry, or django-q2 warns at import; ``configure_conf``
                # sets what the pipeline reads
                Q_CLUSTER={"name": "imqueue-libraries", "timeout": 30, "retry": 60},
            )
            django.setup()


#: ``Conf`` as it was before the first of this process's producers and consumers pointed it at
#: our broker, and how many of them are open: the last to close puts it back (``release_conf``).
_conf_before: dict[str, Any] = {}
_conf_users = 0


def configure_conf(**broker: Any) -> None:
    """Point django-q2's ``Conf`` at our broker with its default settings. ``Conf`` is global to
    the process, and the runner's process may be a Django project's with a broker of its own
    (this one's: the admin launches runs through django-q2): each call is paired with a
    ``release_conf``, and the last one restores what the project had."""
    global _conf_users
    from django_q.conf import Conf  # reads Django's settings: after ensure_django

    changes = {
        **CONF_DEFAULTS,
        "ORM": None,
        "REDIS": {},
        "DJANGO_REDIS": None,
        "BROKER_CLASS": None,
        "IRON_MQ": None,
        "SQS": None,
        "MONGO": None,
        **broker,
    }
    with _SETUP_LOCK:
        if not _conf_users:
            _conf_before.clear()
            _conf_before.update({name: getattr(Conf, name, None) for name in changes})
        _conf_users += 1
        for name, value in changes.items():
            setattr(Conf, name, value)


def release_conf() -> None:
    """One user of ``configure_conf`` is done; the last puts ``Conf`` back as it was."""
    global _conf_users
    from django_q.conf import Conf  # reads Django's settings: after ensure_django

    with _SETUP_LOCK:
        _conf_users = max(0, _conf_users - 1)
        if not _conf_users:
            for name, value in _conf_before.items():
                setattr(Conf, name, value)


class DjangoQ2Backend(LibraryBackend):
    """What both django-q2 backends share."""

    capabilities = LIBRARY.extend(acks=False, redelivers_on_crash=False)

    def conf(self, role: str) -> dict[str, Any]:
        """The ``Conf`` values of this broker, for a worker of ``role``."""
        raise NotImplementedError

    def broker(self, queue: str) -> Any:
        from django_q.brokers import get_broker  # reads Django's settings: after ensure_django

        return get_broker(list_key=queue)

    def enqueue(self, queue: str, body: bytes, broker: Any = None) -> None:
        from django_q.tasks import async_task  # reads Django's settings: after ensure_django

        async_task(TASK, body, q_options={"broker": broker or self.broker(queue), "save": False})

    def prepare_process(self, role: str) -> None:
        """Django set up and ``Conf`` pointed at this broker, for a worker of ``role``; the
        producer or consumer that asks calls ``release_conf`` when it closes."""
        ensure_django()
        configure_conf(**self.conf(role))

    def producer(self, queue: str) -> Producer:
        return _DjangoQProducer(self, queue)

    def consumer(self, queue: str, *, group: str = "default") -> Consumer:
        return _DjangoQConsumer(self, queue)

    def library_environment(self) -> dict[str, Any]:
        return {"library": "django-q2", "library_version": ".".join(map(str, django_q.VERSION))}


class _DjangoQProducer(LibraryProducer):
    backend: DjangoQ2Backend

    def __init__(self, backend: DjangoQ2Backend, queue: str) -> None:
        super().__init__(backend, queue)
        # released at close: a producer made in the runner's own process (a poison fault's, a
        # test's) must leave django-q2's global Conf as the project had it
        backend.prepare_process("producer")
        self.released = False
        self.broker = backend.broker(queue)

    def enqueue(self, body: bytes) -> None:
        self.backend.enqueue(self.queue, body, self.broker)

    def close(self) -> None:
        if not self.released:  # close is idempotent: released once
            self.released = True
            release_conf()
        super().close()


class _DjangoQConsumer(LibraryConsumer):
    """django-q2's pusher, one worker and its monitor, on threads of this process (see the
    module's docstring); the worker runs on the consumer's library thread."""

    backend: DjangoQ2Backend

    def __init__(self, backend: DjangoQ2Backend, queue: str) -> None:
        backend.prepare_process("consumer")  # released in after_stop
        self.task_queue: queue_module.Queue[Any] = queue_module.Queue()
        self.result_queue: queue_module.Queue[Any] = queue_module.Queue()
        self.stop_event = threading.Event()
        self.timer = multiprocessing.Value("f", -1)
        self.helpers: list[threading.Thread] = []
        try:
            super().__init__(backend, queue)
        except BaseException:  # a server that does not answer: no after_stop will come
            release_conf()
            raise

    def run_worker(self) -> None:
        from django_q.monitor import monitor  # reads Django's settings: after ensure_django (__init__)
        from django_q.pusher import pusher  # reads Django's settings: after ensure_django
        from django_q.worker import worker  # reads Django's settings: after ensure_django

        broker = self.backend.broker(self.queue)
        self.helpers = [
            threading.Thread(
                target=pusher, args=(self.task_queue, self.stop_event, broker), daemon=True, name="django-q2-pusher"
            ),
            threading.Thread(target=monitor, args=(self.result_queue, broker), daemon=True, name="django-q2-monitor"),
        ]
        for thread in self.helpers:
            thread.start()
        self.started.set()
        while not self.stop_event.is_set():
            worker(self.task_queue, self.result_queue, self.timer, timeout=None)
            # it returns on STOP, or to be recycled (every ``recycle`` tasks): the sentinel's job

    def stop_worker(self) -> None:
        """As django-q2's sentinel stops a cluster: the pusher first (it ends after its current
        dequeue, whose task it still queues), then STOP behind the tasks it queued."""
        self.stop_event.set()
        if self.helpers:
            self.helpers[0].join(timeout=PUSHER_STOP_S)
        self.task_queue.put(STOP)

    def after_stop(self) -> None:
        self.result_queue.put(STOP)  # the monitor saves and acks what the worker finished, then ends
        for thread in self.helpers:
            thread.join(timeout=2.0)
        release_conf()


class DjangoQ2OrmBackend(PostgresLibraryBackend, DjangoQ2Backend):
    name = "django-q2-orm"
    # django-q2's ORM broker takes the next task with no ORDER BY (its ``OrmQ`` has no ordering):
    # PostgreSQL returns rows in the order they lie in the table, which follows insertion only
    # until deleted rows' space is reused (seen: a test's 25 tasks came back interleaved)
    capabilities = DjangoQ2Backend.capabilities.extend(fifo=False)
    schema, schema_lock = SCHEMA, SCHEMA_LOCK
    task_table, queue_column = "django_q_ormq", "key"
    # every task row of the queue: locked ones (taken by a worker, not yet acknowledged) too;
    # a purge leaves the locked ones, whose lock (``retry``) has not run out
    in_queue, ready = "true", "lock <= now()"

    def conf(self, role: str) -> dict[str, Any]:
        return {"ORM": ALIAS}

    def prepare_process(self, role: str) -> None:
        super().prepare_process(role)
        _add_alias(self.conninfo_params(role))  # its connections named for the role

    def create_tables(self, conn: psycopg.Connection) -> None:
        """django-q2's tables, by its migrations, on the ``imq_djangoq`` alias (once)."""
        if self.has_table(conn, self.task_table):
            return
        with self.schema_locked(conn):
            pass  # the schema alone: the migrations run on Django's connection, after
        ensure_django()
        _add_alias(self.conninfo_params("control"))
        from django.db.migrations.executor import MigrationExecutor  # ~75 ms to import, used once per database

        try:
            with self.converting("create django-q2's tables on", unavailable=(psycopg.Error,)):
                executor = MigrationExecutor(connections[ALIAS])  # no post_migrate: no other app's tables
                targets = [node for node in executor.loader.graph.leaf_nodes() if node[0] == "django_q"]
                executor.migrate(targets)
        finally:
            connections[ALIAS].close()  # never inherited by a forked worker

    def environment(self) -> dict[str, Any]:
        return {**self.server_environment(), **self.library_environment()}


def _add_alias(params: dict[str, Any]) -> None:
    """The ``imq_djangoq`` database alias (Django's defaults filled in), for this process."""
    options = {key: value for key, value in params.items() if key not in ("host", "port", "dbname", "user", "password")}
    config = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.get("dbname", ""),
        "USER": params.get("user", ""),
        "PASSWORD": params.get("password", ""),
        "HOST": params.get("host", ""),
        "PORT": params.get("port", ""),
        "OPTIONS": options,
    }
    filled = connections.configure_settings({"default": config})["default"]
    if ALIAS in connections.settings:
        connections[ALIAS].close()
        # and forgotten: the connection object keeps the settings it was made with, so a second
        # server in the same process (a private one, then the shared one) would reach the first
        del connections[ALIAS]
    connections.settings[ALIAS] = filled


class DjangoQ2RedisBackend(RedisLibraryBackend, DjangoQ2Backend):
    name = "django-q2-redis"
    options = (CONNECT_TIMEOUT,)

    def conf(self, role: str) -> dict[str, Any]:
        """redis-py's keywords (django-q2 passes a dict to ``redis.StrictRedis``): the URL's,
        the connection named for the role, our timeouts."""
        with self.parsing_url():
            kwargs = redis.connection.parse_url(self.url)
        return {
            "REDIS": {
                **kwargs,
                "client_name": f"imq:{self.namespace}:{role}",
                "socket_connect_timeout": self.connect_timeout_s,
            }
        }

    @staticmethod
    def key(queue: str) -> str:
        """django-q2's list for ``queue`` (its Redis broker's ``list_key``)."""
        return f"django_q:{queue}:q"

    def declare(self, queue: str) -> None:
        """Nothing to create: Redis makes the list on the first task."""

    def depth(self, queue: str) -> int:
        with self.converting("measure a queue on"):
            return int(self.client.llen(self.key(queue)))

    def purge(self, queue: str) -> int:
        with self.converting("purge a queue on"):
            pipe = self.client.pipeline(transaction=True)
            pipe.llen(self.key(queue))
            pipe.delete(self.key(queue))
            return int(pipe.execute()[0])

    def delete(self, queue: str) -> None:
        with self.deleting(queue):
            self.client.unlink(self.key(queue))

    def list_queues(self, namespace: str) -> list[str]:
        with self.converting("list the keys on"):
            keys = self.client.scan_iter(match=f"django_q:{glob_escape(namespace)}.*:q", count=1000)
            return sorted(key.decode()[len("django_q:") : -len(":q")] for key in keys)

    def environment(self) -> dict[str, Any]:
        return {**super().environment(), **self.library_environment()}
