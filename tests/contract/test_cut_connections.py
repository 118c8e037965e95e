"""``Backend.cut_connections``: the server ends one run's worker connections and nobody else's,
neither another run's on the same server nor the run's own control connection."""

from __future__ import annotations

import threading

import pytest

from queues.backends import BACKENDS, backend_class
from queues.errors import NotSupported, QueueError
from tests.support.messages import bodies
from tests.support.servers import connected_backend
from tests.support.waiting import wait_until

#: Worker connections of one producer and one consumer, by backend (a ``postgres-notify``
#: consumer listens on a second one). MariaDB sessions have no name: only those running a
#: statement on the run's table while the cut looks are found (the busy producer).
CONNECTIONS = {"postgres-notify": 3, "mysql": 1}


class Sending(threading.Thread):
    """A producer sending small batches back to back until told to stop, keeping what it sent
    and the error that stopped it (a busy worker of a run)."""

    def __init__(self, backend, queue):
        super().__init__(daemon=True)
        self.producer, self.sent, self.error = backend.producer(queue), 0, None
        self.stopping = threading.Event()

    def run(self):
        try:
            while not self.stopping.is_set():
                self.producer.send_batch(bodies(5))
                self.sent += 5
        except QueueError as exc:
            self.error = exc

    def stop(self):
        self.stopping.set()
        self.join(timeout=30)
        try:
            self.producer.close()
        except QueueError:
            pass  # its connection was cut


@pytest.mark.requires("cuts")
def test_cut_connections_ends_the_runs_workers_and_spares_another_run_and_the_control_connection(backend):
    other = connected_backend(backend.name)
    runs = [(backend, f"{backend.namespace}.cut"), (other, f"{other.namespace}.cut")]
    workers = []
    try:
        for owner, queue in runs:
            owner.declare(queue)
            workers.append((Sending(owner, queue), owner.consumer(queue)))
        for sending, _ in workers:
            sending.start()
        wait_until(lambda: all(s.sent for s, _ in workers), 10, "both runs sending")

        ended = wait_until(lambda: backend.cut_connections(runs[0][1]), 30, "a connection of the run to end")

        spared = workers[1][0]
        sent_at_cut = spared.sent
        wait_until(lambda: spared.sent > sent_at_cut or spared.error, 10, "the other run to go on sending")
        assert spared.error is None, spared.error
        assert ended == CONNECTIONS.get(backend.name, 2)
        backend.depth(runs[0][1])  # the run's control connection is still open: no reconnect needed
        other.depth(runs[1][1])
    finally:
        for sending, consumer in workers:
            sending.stop()
            try:
                consumer.close()
            except QueueError:
                pass  # cut
        for owner, queue in runs:
            owner.reconnecting(owner.delete, queue)
        other.close()


@pytest.mark.requires("server")
def test_cut_control_connection_ends_only_the_backends_own(backend):
    other = connected_backend(backend.name)
    try:
        assert wait_until(lambda: backend.cut_control_connection(), 30, "the control connection") == 1
        assert other.cut_control_connection() == 1  # the other's was still there to be found
    finally:
        other.close()


@pytest.mark.parametrize("alias", sorted(a for a in BACKENDS if not backend_class(a).default_url))
def test_a_backend_without_a_server_refuses_to_cut(alias):
    backend = backend_class(alias)()
    with pytest.raises(NotSupported, match=f"^{alias}: there is no server whose connections could be cut$"):
        backend.cut_connections("imq.x")
    with pytest.raises(NotSupported):
        backend.cut_control_connection()
