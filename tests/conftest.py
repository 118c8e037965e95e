import contextlib
import uuid

import pytest

from queues.backends import BACKENDS, Backend, backend_class
from queues.errors import BackendUnavailable
from tests.faults import CUTTERS
from tests.services import IN_CI, connected_backend, queue_of  # noqa: F401 - a fixture


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "requires(*capabilities): run a contract test only on backends that declare these capabilities "
        "('processes' = workers are processes that can be killed; 'server' = the queue lives in a server "
        "that can drop the run's connections)",
    )


def _has(alias: str, capability: str) -> bool:
    cls = backend_class(alias)
    if capability == "server":
        return bool(cls.default_url)
    return getattr(cls.capabilities, capability)


def _installed(alias: str) -> bool:
    """Whether the backend's driver or task library is installed; under CI every backend must be
    (``dev.py test`` installs the ``libraries`` extra), so a missing one fails there."""
    try:
        backend_class(alias)
    except BackendUnavailable:
        if IN_CI:
            raise
        return False
    return True


def pytest_generate_tests(metafunc):
    """Parametrise ``backend`` over every registered backend that has what the test requires,
    so that a capability a backend does not declare is not run (rather than skipped)."""
    if "backend" not in metafunc.fixturenames:
        return
    needed = [cap for mark in metafunc.definition.iter_markers("requires") for cap in mark.args]
    aliases = [a for a in sorted(BACKENDS) if _installed(a) and all(_has(a, cap) for cap in needed)]
    metafunc.parametrize("backend", aliases, indirect=True)


@pytest.fixture
def backend(request, django_db_blocker):
    """A registered backend, connected to its real server (contract suite). The django-q2
    backends use Django's database layer (on a database alias of their own), which
    pytest-django blocks outside ``django_db`` tests: unblocked for them."""
    with django_db_blocker.unblock() if request.param.startswith("django-q2") else contextlib.nullcontext():
        b = connected_backend(request.param)
        yield b
        b.close()


@pytest.fixture
def queue_name(backend):
    name = f"{backend.namespace}.{uuid.uuid4().hex[:8]}"
    backend.declare(name)
    yield name
    backend.delete(name)


@pytest.fixture
def cut_connections(backend):
    """``cut_connections(backend, queue) -> int``: make the server close the run's producer and
    consumer connections (see ``tests/faults.py``); returns how many it closed."""
    if backend.name not in CUTTERS:
        pytest.fail(f"{backend.name} has a server but tests/faults.py has no way to cut its connections")

    def cut(of: Backend, queue: str) -> int:
        return CUTTERS[of.name](of, queue)

    return cut
