"""Every backend converts driver errors the same way, into one-line messages (no server needed:
the conversion is class data plus one formatter on ``Backend``)."""

import logging

import pytest

from queues.backends import BACKENDS, backend_class
from queues.errors import BackendUnavailable, OperationFailed, QueueError

SERVER_BACKENDS = sorted(alias for alias in BACKENDS if not alias.startswith("memory"))
URL_WITH_PASSWORD = {
    "IMQ_POSTGRES_URL": "postgresql://imq:s3cret@db.example:5432/test",
    "IMQ_MYSQL_URL": "mysql://imq:s3cret@db.example:3306/test",
    "IMQ_REDIS_URL": "redis://imq:s3cret@cache.example:6379/0",
    "IMQ_AMQP_URL": "amqp://imq:s3cret@mq.example:5672/%2F",
}


def make(alias):
    cls = backend_class(alias)
    return cls(url=URL_WITH_PASSWORD[cls.url_setting], namespace="imqtest")  # no I/O


@pytest.mark.parametrize("alias", SERVER_BACKENDS)
def test_a_driver_unavailable_error_becomes_backend_unavailable_in_one_line(alias):
    backend = make(alias)
    driver_error = type(backend).unavailable_errors[0]("server closed the connection\nDETAIL: more")
    with pytest.raises(BackendUnavailable) as caught:
        with backend.converting("receive from"):
            raise driver_error
    host = backend.url.split("@")[1]
    assert str(caught.value) == (
        f"{alias}: cannot receive from {backend.url.split(':')[0]}://imq:***@{host} "
        f"(server closed the connection); check the server or set {backend.url_setting}"
    )
    assert caught.value.__cause__ is driver_error


@pytest.mark.parametrize("alias", SERVER_BACKENDS)
def test_a_driver_operation_error_becomes_operation_failed_with_the_same_format(alias):
    backend = make(alias)
    driver_error = type(backend).failed_errors[0]("no such table")
    with pytest.raises(OperationFailed) as caught:
        with backend.converting("purge a queue on"):
            raise driver_error
    message = str(caught.value)
    assert message.startswith(f"{alias}: cannot purge a queue on ") and message.endswith("(no such table)")
    assert "s3cret" not in message and "***" in message
    assert caught.value.__cause__ is driver_error


@pytest.mark.parametrize("alias", SERVER_BACKENDS)
def test_errors_that_are_not_the_drivers_pass_through_untouched(alias):
    backend = make(alias)
    with pytest.raises(KeyError):  # a bug stays a bug, with its own traceback
        with backend.converting("receive from"):
            raise KeyError("x")
    already = QueueError("already converted")
    with pytest.raises(QueueError) as caught:
        with backend.converting("receive from"):
            raise already
    assert caught.value is already


def test_amqp_callback_errors_use_the_same_formatter():
    import pika.exceptions

    backend = make("rabbitmq")
    closed = pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND - no queue 'x'")
    assert isinstance(backend.converted(closed, "receive from"), OperationFailed)
    lost = backend.converted(pika.exceptions.AMQPConnectionError("connection reset"), "receive from")
    assert isinstance(lost, BackendUnavailable)
    assert str(lost) == (
        "rabbitmq: cannot receive from amqp://imq:***@mq.example:5672/%2F (connection reset); "
        "check the server or set IMQ_AMQP_URL"
    )


def test_a_failed_delete_names_the_queue_left_behind_in_the_log(caplog):
    # port 1 on loopback: nothing listens, the connection is refused at once
    backend = backend_class("redis-list")(url="redis://127.0.0.1:1/0", namespace="imqtest")
    with caplog.at_level(logging.WARNING, logger="queues"), pytest.raises(BackendUnavailable):
        backend.delete("imqtest.left-behind")
    assert any(
        r.name == "queues.backends.base" and "imqtest.left-behind is left on the server" in r.getMessage()
        for r in caplog.records
    ), caplog.text


def test_logging_is_configured_for_the_engine_and_pika_is_quiet():
    # the test settings leave IMQ_LOG_LEVEL at its default
    assert logging.getLogger("queues").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("experiments").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("pika").getEffectiveLevel() == logging.CRITICAL
