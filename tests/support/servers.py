"""What the tests need from the machine: the real servers (a connected backend, its URL) and
the programs some tests drive (``promtool``). What is missing skips the test with a clear
message, and FAILS it under ``CI=true``, where nothing may be skipped: ``unavailable`` is that
rule, the only place it is written.
"""

from __future__ import annotations

import os
import shutil
import uuid

import pytest

from queues.backends import Backend, backend_class
from queues.errors import BackendUnavailable

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """Skip on a laptop without the service; fail in CI, where nothing may be skipped."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing service fails the run)", pytrace=False)
    pytest.skip(reason)


def backend_url(alias: str) -> str:
    cls = backend_class(alias)
    return os.environ.get(cls.url_setting or "", "") or cls.default_url


def connected_backend(alias: str, **options) -> Backend:
    """A connected backend with a namespace of its own, or skip/fail if its server is down."""
    cls = backend_class(alias)
    backend = cls(url=backend_url(alias), namespace=f"imqtest-{uuid.uuid4().hex[:10]}", **options)
    try:
        backend.connect()
    except BackendUnavailable as exc:
        unavailable(f"{alias}: server not reachable: {exc}")
    return backend


def closed_port_url(alias: str, *, password: str = "s3cret") -> str:
    """The backend's default URL with a password and port 1, where nothing listens."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(backend_class(alias).default_url)
    user = parts.username or "imq"
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@127.0.0.1:1"))


def promtool() -> str:
    """The path of Prometheus's ``promtool`` (unavailable if it is not installed)."""
    path = shutil.which("promtool")
    if not path:
        unavailable("promtool is missing: apt-get install prometheus (Debian; python3 dev.py test does, as root)")
    return path


def redis_url(what: str = "redis-list") -> str:
    """The URL of the Redis server the tests use, checked to answer (``what`` names the need in
    the message if it does not)."""
    redis = pytest.importorskip("redis")
    url = backend_url("redis-list")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        unavailable(f"{what}: Redis not reachable at {url}: {exc}")
    return url
