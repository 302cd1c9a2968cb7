"""The endpoint's errors: subclasses of :mod:`aios_lab.errors` that carry their HTTP status (and headers).

The app turns any of them into ``{"error": "..."}`` with :func:`aios_lab.errors.http_status`; anything
else is a bug and answers 500.
"""

from __future__ import annotations

from ..errors import AiosError, Busy, InvalidInput, NotFound, Unauthorized

_CLOSE = (b"connection", b"close")


class ProtocolError(InvalidInput):
    """A request the V2 wire format refuses: bad JSON, tensor, shape, datatype or data (400)."""


class TooLarge(ProtocolError):
    """A body over the byte limit or a batch over the row limit (413); the connection is closed."""

    status = 413
    headers = [_CLOSE]


class UnsupportedEncoding(ProtocolError):
    """A ``Content-Encoding`` other than gzip, deflate or identity (415)."""

    status = 415


class BodyTimeout(AiosError):
    """The request body did not arrive in time (408); the connection is closed."""

    status = 408
    headers = [_CLOSE]


class NoRoute(NotFound):
    """No such route, model or version here (404)."""


class MethodNotAllowed(AiosError):
    """The route exists but not for this method (405)."""

    status = 405

    def __init__(self, allowed: str):
        super().__init__("Method Not Allowed")
        self.headers = [(b"allow", allowed.encode())]


class TokenRequired(Unauthorized):
    """No bearer token, or one that is unknown, expired or revoked (401)."""

    headers = [(b"www-authenticate", b"Bearer")]


class NotSupported(AiosError):
    """A protocol feature this server does not implement (501)."""

    status = 501


class Overloaded(Busy):
    """Back-pressure: the model's queue or the parser is full; the client should retry (429, Retry-After)."""

    headers = [(b"retry-after", b"1")]

    def __init__(self, message: str, reason: str = "queue_full"):
        super().__init__(message)
        self.reason = reason


class Unavailable(AiosError):
    """The server cannot take this request right now: starting, draining, or its helper restarting (503)."""

    status = 503
    headers = [(b"retry-after", b"1")]


__all__ = [
    "ProtocolError",
    "TooLarge",
    "UnsupportedEncoding",
    "BodyTimeout",
    "NoRoute",
    "MethodNotAllowed",
    "TokenRequired",
    "NotSupported",
    "Overloaded",
    "Unavailable",
]
