"""The exception hierarchy: invalid input, permanent failure, transient failure.

Each class carries a stable `code` for clients and an HTTP status; retry decisions
(`is_transient`) live here too, so each mapping exists in one place.
"""

from __future__ import annotations

import asyncio

__all__ = [
    "Conflict",
    "ExportError",
    "Forbidden",
    "Gone",
    "InvalidInput",
    "NotFound",
    "PermanentError",
    "RateLimited",
    "StepTimeout",
    "TransientError",
    "Unauthenticated",
    "is_transient",
]


class ExportError(Exception):
    """Base of every error the service raises on purpose."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(ExportError):
    """The request or message is wrong; retrying cannot help."""

    code = "invalid_request"
    status = 422


class Unauthenticated(ExportError):
    code = "unauthenticated"
    status = 401


class Forbidden(ExportError):
    code = "forbidden"
    status = 403


class NotFound(ExportError):
    code = "not_found"
    status = 404


class Conflict(ExportError):
    code = "conflict"
    status = 409


class Gone(ExportError):
    code = "gone"
    status = 410


class RateLimited(ExportError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ExportError):
    """A job step failed in a way that will fail again: roll back, don't retry."""

    code = "export_failed"


class StepTimeout(PermanentError):
    code = "step_timeout"


class TransientError(ExportError):
    """A failure worth retrying (a dropped connection, a busy dependency)."""

    code = "transient_failure"
    status = 503


def is_transient(exc: BaseException) -> bool:
    """Whether a step that raised `exc` may succeed if run again."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, ExportError | asyncio.CancelledError | TimeoutError):
        return False
    if isinstance(exc, ConnectionError):
        return True
    # Imported lazily so the hierarchy stays importable without drivers loaded.
    import aiormq.exceptions
    import asyncpg

    return isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.exceptions.SerializationError
        | asyncpg.exceptions.DeadlockDetectedError
        | asyncpg.exceptions.TooManyConnectionsError
        | aiormq.exceptions.AMQPConnectionError,
    )
