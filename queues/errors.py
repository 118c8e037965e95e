"""Errors raised by the engine and by backends.

Driver exceptions are converted at the backend boundary into these, keeping the cause
(``raise BackendUnavailable(...) from exc``), so callers never import a driver to catch one.
"""


class QueueError(Exception):
    """Base of every error the engine raises on purpose."""


class InvalidSpec(QueueError, ValueError):
    """A workload parameter is out of range; the message says what is allowed.

    ``field`` names the spec field at fault (``events``, ``options``...) when there is one, so
    a form can show the message beside it."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownBackend(QueueError, LookupError):
    """No backend or approach is registered under that alias."""


class BackendUnavailable(QueueError):
    """The server cannot be reached, refused us (down, bad credentials, missing driver), or the
    connection was lost mid-operation."""


class NotSupported(QueueError):
    """The backend cannot do this; it never returns a made-up value instead."""


class DecodeError(QueueError):
    """A message body is not a valid imqueue event batch (poison)."""


class OperationFailed(QueueError):
    """The server answered but the operation failed (an SQL error, a script error, a channel
    the broker closed): retrying against the same server will not help."""


class QueueNotFound(QueueError, LookupError):
    """The queue was never declared (or was deleted) where this backend looks for it."""
