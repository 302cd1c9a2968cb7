"""Errors of the language-model routes, and OpenAI's error shape for the ``/v1`` routes.

OpenAI clients read ``{"error": {"message", "type", "param", "code"}}``; the generate extension keeps the
V2 shape ``{"error": "..."}``. Both come from the same :class:`aios_lab.errors.AiosError` subclasses, so
a mistake answers the same status on every route.
"""

from __future__ import annotations

import orjson

from ...errors import AiosError, InvalidInput, http_status
from ..errors import NoRoute


class BadParam(InvalidInput):
    """A request parameter that cannot be used as given (400); ``param`` names it for OpenAI clients."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class ModelNotFound(NoRoute):
    """No language model of that name (or version) is served here (404)."""

    param = "model"
    code = "model_not_found"


class Retired(Exception):
    """The engine stopped taking requests (its version was swapped out): route the request again."""


_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}
_CODES = {401: "invalid_api_key", 413: "request_too_large", 429: "rate_limit_exceeded"}


def openai_error(exc: BaseException) -> tuple[int, bytes]:
    """``(status, body)`` in OpenAI's error shape for ``exc`` (500 and a generic message for a bug)."""
    status = http_status(exc)
    message = str(exc) if isinstance(exc, AiosError) else f"internal error: {type(exc).__name__}: {exc}"
    return status, openai_error_body(message, status, getattr(exc, "param", None), getattr(exc, "code", None))


def openai_error_body(message: str, status: int, param: str | None = None, code: str | None = None) -> bytes:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps(
        {"error": {"message": message, "type": kind, "param": param, "code": code or _CODES.get(status)}}
    )


__all__ = ["BadParam", "ModelNotFound", "Retired", "openai_error", "openai_error_body"]
