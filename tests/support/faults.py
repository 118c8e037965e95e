"""Make a server close one run's connections, and nobody else's: the "server lost mid-run"
fault of the contract suite, and the runner's own control connection lost.

The product does it (``Backend.cut_connections`` and ``Backend.cut_control_connection``); these
names stay for the tests written against them. ``CUTTERS`` end the workers' connections and
leave the runner's control connection alone, so the run can still be judged and cleaned up;
``CONTROL_CUTTERS`` end only the control connection. Each returns how many connections it ended
(0: none found yet, the caller tries again).
"""

from __future__ import annotations

from collections.abc import Callable

from queues.backends import BACKENDS, Backend


def cut_workers(backend: Backend, queue: str) -> int:
    return backend.cut_connections(queue)


def cut_control(backend: Backend) -> int:
    return backend.cut_control_connection()


SERVER_BACKENDS = ("postgres", "postgres-notify", "mysql", "redis-list", "redis-list-noack", "redis-stream", "rabbitmq")
cut_postgres = cut_mysql = cut_redis = cut_rabbitmq = cut_workers
#: The backends whose workers' connections can be cut (not the task libraries').
CUTTERS: dict[str, Callable[[Backend, str], int]] = dict.fromkeys(SERVER_BACKENDS, cut_workers)
#: ``cutter(backend) -> int``: end the backend's control connection (the runner's own): every
#: backend with a server, the task libraries too.
CONTROL_CUTTERS: dict[str, Callable[[Backend], int]] = dict.fromkeys(BACKENDS, cut_control)
