"""The errors users see: one line that says what to do, raised before anything is changed.

Both REST faces (the serving endpoint and the Jupyter server extension) map them to HTTP status
codes through :func:`http_status`, so the same mistake answers the same way everywhere.
"""

from __future__ import annotations


class AiosError(Exception):
    """A user-facing error: one line, no traceback needed, nothing was changed (HTTP 400)."""

    status = 400


class InvalidInput(AiosError):
    """A flag, a value or a request body that cannot be used as given (HTTP 400)."""

    status = 400


class Unauthorized(AiosError):
    """No credential, or one that does not allow this action (HTTP 401, or 403 when forbidden)."""

    status = 401


class Forbidden(Unauthorized):
    """A valid credential whose role or scope does not cover this action (HTTP 403)."""

    status = 403


class NotFound(AiosError):
    """The named dataset, job, model, version or token does not exist (HTTP 404)."""

    status = 404


class Conflict(AiosError):
    """The action clashes with the current state: a name in use, a job still running (HTTP 409)."""

    status = 409


class Busy(AiosError):
    """The service is at capacity right now; try again after a moment (HTTP 429)."""

    status = 429


def http_status(exc: BaseException) -> int:
    """The HTTP status for an error: its class's status for an AiosError, 500 for anything else."""
    return int(getattr(exc, "status", 500)) if isinstance(exc, AiosError) else 500


__all__ = ["AiosError", "InvalidInput", "Unauthorized", "Forbidden", "NotFound", "Conflict", "Busy", "http_status"]
