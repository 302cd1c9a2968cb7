"""The HTTP layer of the endpoint: the request as handlers see it, its body (size limit, time limit) and the response.

A handler returns a :class:`Response`; it reports a problem by raising an :class:`aios_lab.errors.AiosError`
subclass, which :func:`error_response` turns into ``{"error": "..."}`` with the status that
:func:`aios_lab.errors.http_status` gives it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from ..errors import AiosError, http_status
from .errors import BodyTimeout, ProtocolError, TooLarge

log = logging.getLogger("aios_lab.serve")

JSON = [(b"content-type", b"application/json")]


class Disconnected(Exception):
    """The client went away before its body was in."""


class Response:
    """A finished response: status, body bytes and headers (content-length is added when sent)."""

    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body: bytes = b"", headers: list | None = None):
        self.status, self.body, self.headers = status, body, JSON if headers is None else headers


def ok(doc: Any) -> Response:
    return Response(200, orjson.dumps(doc))


def error_response(exc: BaseException) -> Response:
    """``{"error": "..."}`` for ``exc``: its own status and headers for an AiosError, 500 for anything else."""
    status = http_status(exc)
    message = str(exc) if isinstance(exc, AiosError) else f"internal error: {type(exc).__name__}: {exc}"
    return Response(status, orjson.dumps({"error": message}), JSON + list(getattr(exc, "headers", ())))


class BodyDeadlines:
    """Requests whose bodies are still arriving, with the time (``time.perf_counter``) each must be in by.

    :meth:`sweep` (run by the app every half second) cancels the reads that are late; registering a read
    costs a dict entry, not a timer per request."""

    def __init__(self) -> None:
        self.reading: dict[asyncio.Task, float] = {}
        self.late: set[asyncio.Task] = set()
        self.loop: asyncio.AbstractEventLoop | None = None  # the serving loop: current_task(loop) is cheap

    def task(self) -> asyncio.Task:
        task = asyncio.current_task(self.loop) if self.loop is not None else None
        return task if task is not None else asyncio.current_task()  # another loop (in-process tests)

    def sweep(self) -> int:
        now = time.perf_counter()
        late = [task for task, deadline in self.reading.items() if deadline < now]
        for task in late:
            self.late.add(task)
            task.cancel()
        return len(late)


class Request:
    """What a handler needs from the ASGI scope, read once."""

    __slots__ = (
        "method",
        "path",
        "authorization",
        "ihcl",
        "content_encoding",
        "accept_encoding",
        "content_length",
        "request_id",
        "client",
        "receive",
        "body_len",
        "t0",
    )

    def __init__(self, scope: dict, receive: Callable, t0: float):
        self.method, self.path, self.receive, self.t0 = scope["method"], scope["path"], receive, t0
        self.authorization = self.ihcl = self.content_encoding = self.accept_encoding = self.content_length = None
        self.request_id = None  # X-Request-ID: what a canary split is deterministic for
        for k, v in scope["headers"]:
            if k == b"authorization":
                self.authorization = v.decode("latin-1")
            elif k == b"inference-header-content-length":
                self.ihcl = v.decode("latin-1")
            elif k == b"content-encoding":
                self.content_encoding = v.decode("latin-1")
            elif k == b"accept-encoding":
                self.accept_encoding = v.decode("latin-1")
            elif k == b"content-length":
                self.content_length = v.decode("latin-1")
            elif k == b"x-request-id":
                self.request_id = v
        self.client = scope.get("client")
        self.body_len = 0

    async def body(self, limit: int, timeout: float, deadlines: BodyDeadlines) -> bytes | bytearray:
        """The whole body: 413 past ``limit`` bytes (before reading, when Content-Length says so), 408 when
        it is not in within ``timeout`` seconds of the request's start."""
        if self.content_length is not None:
            try:
                declared = int(self.content_length)
            except ValueError:
                raise ProtocolError("bad Content-Length header") from None
            if declared > limit:
                raise TooLarge(f"request body of {declared} bytes is over the {limit}-byte limit")
        task = deadlines.task()
        deadlines.reading[task] = self.t0 + timeout
        try:  # the reading is written out here, not in a helper coroutine: one level fewer per request
            msg = await self.receive()
            if msg["type"] == "http.disconnect":
                raise Disconnected()
            body = msg.get("body", b"")
            if msg.get("more_body"):
                buf = bytearray(body)  # grows in place: no second copy of a large body
                while msg.get("more_body"):
                    msg = await self.receive()
                    if msg["type"] == "http.disconnect":
                        raise Disconnected()
                    buf += msg.get("body", b"")
                    if len(buf) > limit:
                        raise TooLarge(f"request body is over the {limit}-byte limit")
                body = buf
            elif len(body) > limit:
                raise TooLarge(f"request body is over the {limit}-byte limit")
        except asyncio.CancelledError:
            if task not in deadlines.late:
                raise
            deadlines.late.discard(task)
            task.uncancel()
            raise BodyTimeout(
                f"the request body did not arrive within {timeout:g} s; send it in one go "
                "(the endpoint's --body-timeout-s sets the limit)"
            ) from None
        finally:
            deadlines.reading.pop(task, None)
        self.body_len = len(body)
        return body
