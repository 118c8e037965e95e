"""What every suite shares: the session's checks that nothing was left behind (private servers,
network namespaces), the ``backend`` parametrisation of the contract suite and its fixtures,
``queue_of``, ``silent_port``, and the session fixtures; the helpers are in ``tests/support/``.

A fixture here touches a server only when a test asks for it: ``pytest tests/unit`` needs none.
"""

import contextlib
import os
import shutil
import signal
import socket
import threading
import uuid

import pytest

from queues.backends import BACKENDS, Backend, backend_class
from queues.errors import BackendUnavailable
from queues.faults import servers
from tests.support import netns
from tests.support.faults import CUTTERS
from tests.support.servers import IN_CI, backend_url, connected_backend


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "requires(*capabilities): run a contract test only on backends that declare these capabilities "
        "('processes' = workers are processes that can be killed; 'server' = the queue lives in a server "
        "that can drop the run's connections)",
    )
    config.addinivalue_line(
        "markers",
        "stack(web=True, env={}, redis=False, hosts='', own_metrics=False): how the module's running product "
        "is made (the ``stack`` fixture, tests/integration/conftest.py)",
    )


SERVERS_BEFORE = pytest.StashKey[set[str]]()


def _xdist_worker(session) -> bool:
    """Whether this is one of pytest-xdist's workers (``dev.py test`` runs three): the checks of
    what the session left behind run once, in the controller, after every worker has ended (a
    worker would take the other's live servers and namespaces for leftovers)."""
    return hasattr(session.config, "workerinput")


def pytest_sessionstart(session):
    if not _xdist_worker(session):
        session.stash[SERVERS_BEFORE] = set(servers.private_server_dirs())


def pytest_sessionfinish(session, exitstatus):
    """Fail the session when it left a private server (a directory or a process) or a network
    namespace behind, and remove it: every test must close what it started, even when it fails."""
    if _xdist_worker(session):
        return
    if namespaces := netns.leftovers_remove():
        _fail_session(session, f"network namespaces left behind (now removed with their veth pairs): {namespaces}")
    before = session.stash.get(SERVERS_BEFORE, set())
    ours = {
        d
        for d in servers.private_server_dirs()
        if d not in before and (not servers.owner_alive(d) or servers.owner_pid(d) == os.getpid())
    }
    # a server may rename itself (redis-server shows "127.0.0.1:<port>"): its group, from the
    # directory's pid file, and any process that names a directory of ours or a removed one
    processes = {pid: d for d in ours for pid in servers.server_group(d)}
    processes.update(
        (pid, d)
        for pid, d in servers.private_server_processes().items()
        if d in ours or (d not in before and not os.path.exists(d))
    )
    if not ours and not processes:
        return
    for directory in ours:  # each server leads a session of its own: its whole group goes
        if (leader := servers.server_pid(directory)) and servers.group_members(leader):
            servers.kill_group(leader)
    for pid in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for directory in ours:
        shutil.rmtree(directory, ignore_errors=True)
    _fail_session(
        session, f"private servers left behind (now removed): directories {sorted(ours)}, processes {sorted(processes)}"
    )


def _fail_session(session, what: str) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"FAILED: {what}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _has(alias: str, capability: str) -> bool:
    cls = backend_class(alias)
    if capability == "server":
        return bool(cls.default_url)
    if capability == "cuts":  # the cut-connections fault (not the task libraries: docs/how-to/task-libraries.md)
        return cls.can_cut_connections()
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
    pytest-django blocks outside ``django_db`` tests: unblocked for them, their tables made first."""
    if request.param.startswith("django-q2"):
        request.getfixturevalue("django_q2_tables")
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
    consumer connections (see ``tests/support/faults.py``); returns how many it closed."""
    if backend.name not in CUTTERS:
        pytest.fail(f"{backend.name} has a server but tests/support/faults.py has no way to cut its connections")

    def cut(of: Backend, queue: str) -> int:
        return CUTTERS[of.name](of, queue)

    return cut


@pytest.fixture
def queue_of():
    """``queue_of(alias, **options)``: a connected backend and a declared queue of its own,
    deleted afterwards."""
    made = []

    def make(alias, **options):
        backend = connected_backend(alias, **options)
        queue = f"{backend.namespace}.q"
        backend.declare(queue)
        made.append((backend, queue))
        return backend, queue

    yield make
    for backend, queue in made:
        backend.delete(queue)
        backend.close()


@pytest.fixture(scope="module")
def silent_port():
    """A port on loopback where connections are accepted and then left without a word."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])  # kept open, never read or written
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.fixture(scope="session")
def django_q2_tables(django_db_setup, django_db_blocker):
    """django-q2's tables, made as a fresh machine's first use makes them (its migrations, on a
    database alias of its own), before any test that needs them: every test of the django suite
    (``tests/django/conftest.py``), and the ``backend`` fixture's django-q2 backends. The admin's
    backend list connects every backend from a thread, and on a fresh database that first
    connection of ``django-q2-orm`` migrates: pytest-django forbids that alias inside a test (an
    installation migrates in the request). Not autouse: a run of ``tests/unit`` touches no
    server, not even the test database's."""
    with django_db_blocker.unblock():
        try:
            backend = backend_class("django-q2-orm")(url=backend_url("django-q2-orm"), namespace="imqtest-setup")
            backend.connect()
        except BackendUnavailable:
            return  # no PostgreSQL or no django-q2 here: the tests that need them say so
        backend.close()


@pytest.fixture(autouse=True, scope="session")
def _runs_lock_of_the_tests(tmp_path_factory):
    """The suite's runs take a lock of their own (``IMQ_RUN_LOCK_PATH``), not the machine's: a
    developer's run or a scorecard in progress must not hold the suite up. One per pytest-xdist
    worker, in this process and in the commands its tests start (through the environment they
    inherit): two workers' commands must not wait for each other's runs (a command that waits
    says so on stderr). The stacks of ``tests/support/stack.py`` get one of their own too."""
    from django.conf import settings

    path = str(tmp_path_factory.mktemp("lock") / "runs.lock")
    settings.IMQ_RUN_LOCK_PATH = path
    before = os.environ.get("IMQ_RUN_LOCK_PATH")
    os.environ["IMQ_RUN_LOCK_PATH"] = path
    yield
    if before is None:
        os.environ.pop("IMQ_RUN_LOCK_PATH", None)
    else:
        os.environ["IMQ_RUN_LOCK_PATH"] = before
