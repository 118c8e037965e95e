import uuid

import pytest

from queues.backends import BACKENDS
from tests.services import connected_backend


@pytest.fixture(params=sorted(BACKENDS))
def backend(request):
    """Every registered backend, connected to its real server (contract suite)."""
    b = connected_backend(request.param)
    yield b
    b.close()


@pytest.fixture
def queue_name(backend):
    name = f"{backend.namespace}.{uuid.uuid4().hex[:8]}"
    backend.declare(name)
    yield name
    backend.delete(name)
