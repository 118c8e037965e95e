import pytest

from queues.backends import BACKENDS, backend_class
from queues.backends.base import redact_url
from queues.errors import UnknownBackend
from queues.run.launch import build_backend, check_alias, known_aliases


def test_every_registered_backend_imports_and_declares_itself():
    for alias in BACKENDS:
        cls = backend_class(alias)
        assert cls.name == alias
        assert isinstance(cls.capabilities.as_dict(), dict)


def test_unknown_backend_suggests_the_closest_alias():
    with pytest.raises(UnknownBackend, match=r"did you mean 'memory-mp'\?"):
        backend_class("memory_mp")
    with pytest.raises(UnknownBackend, match="did you mean 'asyncio'"):
        check_alias("asyncoi")
    with pytest.raises(UnknownBackend, match="choose one of: .*loop"):
        check_alias("zzz")


def test_approaches_and_backends_are_told_apart():
    assert check_alias("loop") == "approach"
    assert check_alias("memory") == "backend"
    assert {"memory", "memory-mp", "loop", "asyncio", "futures", "reactive"} <= set(known_aliases())


def test_constructor_does_no_io_and_urls_are_redacted():
    backend = build_backend("redis-list", urls={"IMQ_REDIS_URL": "redis://user:secret@127.0.0.1:1/0"})
    assert backend.url == "redis://user:secret@127.0.0.1:1/0"
    assert "secret" not in backend.describe_url()
    assert build_backend("redis-list").url == backend_class("redis-list").default_url
    assert redact_url("amqp://guest:guest@127.0.0.1:5672/%2F") == "amqp://guest:***@127.0.0.1:5672/%2F"
    assert redact_url("postgresql://127.0.0.1/test") == "postgresql://127.0.0.1/test"
