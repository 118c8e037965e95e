"""Registry of queue backends: alias -> dotted class path, imported lazily.

Importing a driver (psycopg, redis, pika) only when its backend is used keeps ``queues``
usable on a machine that has only one broker client installed.

Those imports are made one at a time, whatever the thread: Python locks each module while it is
imported, and two threads importing modules that import each other (pika's do) can each hold the
lock the other waits for, which Python reports as a ``_DeadlockError``. ``listbackends`` and the
admin's backend list resolve every backend from a thread of its own, all at once.
"""

from __future__ import annotations

import importlib
import threading

from queues.backends.base import Backend, Batch, Capabilities, Consumer, Producer
from queues.errors import BackendUnavailable, UnknownBackend
from queues.text import suggest

__all__ = [
    "BACKENDS",
    "LIBRARY_BACKENDS",
    "Backend",
    "Batch",
    "Capabilities",
    "Consumer",
    "Producer",
    "backend_class",
]

BACKENDS: dict[str, str] = {
    "memory": "queues.backends.memory.MemoryBackend",
    "memory-mp": "queues.backends.memory.MultiprocessBackend",
    "postgres": "queues.backends.postgres.PostgresBackend",
    "postgres-notify": "queues.backends.postgres.PostgresNotifyBackend",
    "mysql": "queues.backends.mysql.MySQLBackend",
    "redis-list": "queues.backends.redis_list.RedisListBackend",
    "redis-list-noack": "queues.backends.redis_list.RedisListNoAckBackend",
    "redis-stream": "queues.backends.redis_stream.RedisStreamBackend",
    "rabbitmq": "queues.backends.rabbitmq.RabbitMQBackend",
    # task libraries (the optional extra `libraries`): queues/backends/libraries/
    "celery-redis": "queues.backends.libraries.celery_backend.CeleryRedisBackend",
    "celery-rabbitmq": "queues.backends.libraries.celery_backend.CeleryRabbitMQBackend",
    "rq": "queues.backends.libraries.rq_backend.RQBackend",
    "huey": "queues.backends.libraries.huey_backend.HueyBackend",
    "procrastinate": "queues.backends.libraries.procrastinate_backend.ProcrastinateBackend",
    # django-q2 is a Django app: the one module of queues/ that imports Django (the import contract)
    "django-q2-orm": "queues.backends.libraries.djangoq_backend.DjangoQ2OrmBackend",
    "django-q2-redis": "queues.backends.libraries.djangoq_backend.DjangoQ2RedisBackend",
    "dramatiq-redis": "queues.backends.libraries.dramatiq_backend.DramatiqRedisBackend",
    "dramatiq-rabbitmq": "queues.backends.libraries.dramatiq_backend.DramatiqRabbitMQBackend",
}
#: The task-library backends (docs/how-to/task-libraries.md), known without importing their libraries.
LIBRARY_BACKENDS = frozenset(
    {
        "celery-redis",
        "celery-rabbitmq",
        "rq",
        "huey",
        "procrastinate",
        "django-q2-orm",
        "django-q2-redis",
        "dramatiq-redis",
        "dramatiq-rabbitmq",
    }
)
#: Held while a backend's module is imported (re-entrant: a backend module may look up another).
_IMPORT_LOCK = threading.RLock()


def backend_class(alias: str) -> type[Backend]:
    """The class registered as ``alias``.

    Raises ``UnknownBackend`` with the known aliases and a "did you mean" hint, or
    ``BackendUnavailable`` if the backend's driver is not installed.
    """
    try:
        path = BACKENDS[alias]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise UnknownBackend(
            f"unknown backend {alias!r}{suggest(alias, list(BACKENDS))}; known backends: {known}"
        ) from None
    module_name, _, class_name = path.rpartition(".")
    try:
        with _IMPORT_LOCK:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(
            f"backend {alias!r} needs a driver that is not installed ({exc.name}); "
            f"install the project with `pip install -e .`"
        ) from exc
    return getattr(module, class_name)
