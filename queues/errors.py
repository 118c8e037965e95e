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
    """The server cannot be reached or refused us (down, bad credentials, missing driver)."""


class NotSupported(QueueError):
    """The backend cannot do this; it never returns a made-up value instead."""


class DecodeError(QueueError):
    """A message body is not a valid imqueue event batch (poison)."""


class RunFailed(QueueError):
    """A run could not finish: a worker died, the broker went away, or it was cancelled."""


class RunCancelled(RunFailed):
    """The run was cancelled by the user before it finished."""
