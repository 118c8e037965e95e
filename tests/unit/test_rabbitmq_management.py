"""The management API client, against a stand-in HTTP server (the broker here has no plugin)."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from queues.backends.rabbitmq_management import ManagementApi


@pytest.fixture
def api_server():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            seen.append((self.path, self.headers.get("Authorization")))
            known = self.path.startswith("/api/queues/%2F/imq.q1?")
            body = json.dumps({"messages_unacknowledged": 7}).encode()
            self.send_response(200 if known else 404)
            self.end_headers()
            self.wfile.write(body if known else b"{}")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


def test_unacked_comes_from_the_queue_of_the_amqp_urls_vhost_with_its_credentials(api_server):
    port, seen = api_server
    api = ManagementApi("amqp://alice:s%40cret@127.0.0.1:5672/%2F", port)
    assert api.unacked("imq.q1") == 7
    assert seen[0][0] == "/api/queues/%2F/imq.q1?columns=messages_unacknowledged"
    assert seen[0][1] == "Basic YWxpY2U6c0BjcmV0"  # alice:s@cret
    assert api.unacked("imq.unknown") is None  # a 404: not known (yet), asked again next time
    assert api.base is not None


def test_no_plugin_means_none_and_no_more_asking():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = ManagementApi("amqp://guest:guest@127.0.0.1:5672/%2F", port)
    assert api.unacked("imq.q1") is None and api.base is None
    assert ManagementApi("amqp://guest:guest@127.0.0.1/%2F", 0).unacked("imq.q1") is None  # 0: never asked
