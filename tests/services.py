"""Real servers for tests: connect, or skip with a clear message (fail under ``CI=true``).

Shared by the contract suite and the backend-specific suites (dramatiq ``tests/conftest.py``).
"""

from __future__ import annotations

import os
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
