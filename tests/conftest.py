import uuid

import pytest

from queues.backends import BACKENDS, backend_class
from tests.services import connected_backend, queue_of  # noqa: F401 - a fixture


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "requires(*capabilities): run a contract test only on backends that declare these capabilities "
        "('processes' = workers are processes that can be killed)",
    )


def _has(alias: str, capability: str) -> bool:
    return getattr(backend_class(alias).capabilities, capability)


def pytest_generate_tests(metafunc):
    """Parametrise ``backend`` over every registered backend that has what the test requires,
    so that a capability a backend does not declare is not run (rather than skipped)."""
    if "backend" not in metafunc.fixturenames:
        return
    needed = [cap for mark in metafunc.definition.iter_markers("requires") for cap in mark.args]
    aliases = [a for a in sorted(BACKENDS) if all(_has(a, cap) for cap in needed)]
    metafunc.parametrize("backend", aliases, indirect=True)


@pytest.fixture
def backend(request):
    """A registered backend, connected to its real server (contract suite)."""
    b = connected_backend(request.param)
    yield b
    b.close()


@pytest.fixture
def queue_name(backend):
    name = f"{backend.namespace}.{uuid.uuid4().hex[:8]}"
    backend.declare(name)
    yield name
    backend.delete(name)
