"""A server that accepts TCP and never answers is reported within ``connect_timeout_s``, in one
line, by every server backend; a malformed URL is one line naming the setting. No real server:
a listener thread on loopback plays the silent one."""

from __future__ import annotations

import time

import pytest

from queues.backends import BACKENDS, backend_class
from queues.backends.base import CONNECT_TIMEOUT
from queues.errors import BackendUnavailable

SERVER_BACKENDS = sorted(alias for alias in BACKENDS if backend_class(alias).default_url)
#: What each URL setting looks like when it points at the silent listener.
SILENT_URLS = {
    "IMQ_POSTGRES_URL": "postgresql://imq:s3cret@127.0.0.1:{port}/test",
    "IMQ_MYSQL_URL": "mysql://imq:s3cret@127.0.0.1:{port}/test",
    "IMQ_REDIS_URL": "redis://imq:s3cret@127.0.0.1:{port}/0",
    "IMQ_AMQP_URL": "amqp://imq:s3cret@127.0.0.1:{port}/%2F",
}


def silent_urls(port: int) -> dict[str, str]:
    return {setting: url.format(port=port) for setting, url in SILENT_URLS.items()}


def smallest_timeout_s(alias: str) -> float:
    """1 s, or the backend's minimum when it cannot wait less (libpq: 2 s)."""
    option = {o.name: o for o in backend_class(alias).options}["connect_timeout_s"]
    return max(1.0, option.minimum or 0.0)


def test_every_server_backend_declares_the_connect_timeout():
    for alias in SERVER_BACKENDS:
        option = {o.name: o for o in backend_class(alias).options}.get("connect_timeout_s")
        assert option is not None, f"{alias} does not declare connect_timeout_s"
        assert option.default == CONNECT_TIMEOUT.default and option.unit == "s"


@pytest.mark.parametrize("alias", SERVER_BACKENDS)
def test_a_silent_server_is_reported_within_the_connect_timeout_in_one_line(alias, silent_port):
    cls = backend_class(alias)
    timeout_s = smallest_timeout_s(alias)
    backend = cls(url=silent_urls(silent_port)[cls.url_setting], namespace="imqtest", connect_timeout_s=timeout_s)
    for what, attempt in (("connect", backend.connect), ("a consumer", lambda: backend.consumer("imqtest.q"))):
        began = time.monotonic()
        with pytest.raises(BackendUnavailable) as caught:
            attempt()
        took_s = time.monotonic() - began
        message = str(caught.value)
        assert took_s < 3 * timeout_s, f"{alias}: {what} took {took_s:.1f} s with connect_timeout_s={timeout_s}"
        assert "\n" not in message and message.startswith(f"{alias}: cannot connect to ")
        assert message.endswith(f"; check the server or set {cls.url_setting}") and "s3cret" not in message
    backend.close()


def test_listbackends_probes_every_backend_at_once(silent_port):
    from experiments.services.backend_status import backend_statuses

    began = time.monotonic()
    rows = {row["alias"]: row for row in backend_statuses(urls=silent_urls(silent_port))}
    took_s = time.monotonic() - began
    # one after another this is 7 connect timeouts (21 s); at once it is one
    assert took_s < 3 * CONNECT_TIMEOUT.default, f"listbackends took {took_s:.1f} s"
    for alias in SERVER_BACKENDS:
        assert rows[alias]["state"] == "unreachable", rows[alias]
        assert "\n" not in rows[alias]["detail"] and backend_class(alias).url_setting in rows[alias]["detail"]
    assert rows["memory"]["state"] == "ready" and rows["loop"]["state"] == "in-process"


@pytest.mark.parametrize("alias", SERVER_BACKENDS)
@pytest.mark.parametrize(
    "url", ["nonsense", "{scheme}://imq:s3cret@127.0.0.1:notaport/x", "{scheme}://imq:s3cret@[::1/x"]
)
def test_a_malformed_url_is_one_line_naming_the_setting(alias, url):
    cls = backend_class(alias)
    backend = cls(url=url.format(scheme=cls.default_url.split(":")[0]), namespace="imqtest")  # no I/O yet
    began = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        backend.connect()
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{alias}: ") and cls.url_setting in message
    assert "s3cret" not in message
    assert time.monotonic() - began < 3 * CONNECT_TIMEOUT.default  # refused, or nothing to wait for
    backend.close()


@pytest.mark.parametrize("alias", SERVER_BACKENDS)
def test_nonsense_is_called_a_malformed_url(alias):
    cls = backend_class(alias)
    with pytest.raises(BackendUnavailable) as caught:
        cls(url="nonsense", namespace="imqtest").connect()
    assert str(caught.value).startswith(f"{alias}: malformed URL nonsense (")
    assert f"set {cls.url_setting} to a URL like " in str(caught.value)


def test_the_guarantee_in_words_follows_the_capabilities():
    words = {alias: backend_class(alias).capabilities.guarantee() for alias in BACKENDS}
    assert words["memory-mp"] == words["redis-list-noack"] == "at-most-once"
    assert {words[a] for a in ("postgres", "mysql", "redis-list", "redis-stream", "rabbitmq")} == {"at-least-once"}
    noack = backend_class("redis-list")(url="redis://127.0.0.1:6379/0", ack=False)
    assert noack.capabilities.guarantee() == "at-most-once"
