"""Server-sent events over plain ASGI, and noticing a client that goes away while its tokens are generated.

A streamed response is an :class:`EventStream`: the app sends its head, then every chunk its body
produces, then the end. While it streams (and while a non-streamed generation runs, see :func:`watch`),
a task waits on ASGI ``receive()``, which answers ``http.disconnect`` the moment the client closes the
connection; the request's sequences are then cancelled, and the engine frees their slots at its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from ...errors import AiosError

log = logging.getLogger("aios_lab.serve")

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
DONE = b"data: [DONE]\n\n"


def event(doc: Any) -> bytes:
    """One SSE ``data:`` event holding ``doc`` as JSON."""
    return b"data: " + orjson.dumps(doc) + b"\n\n"


@contextlib.asynccontextmanager
async def watch(receive: Callable, on_disconnect: Callable[[], None]) -> AsyncIterator[asyncio.Event]:
    """While inside, call ``on_disconnect`` as soon as the client goes away; yields an Event set then.
    Use only once the request body has been read."""
    gone = asyncio.Event()

    async def listen() -> None:
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                gone.set()
                on_disconnect()
                return

    task = asyncio.get_running_loop().create_task(listen())
    try:
        yield gone
    finally:
        task.cancel()


class EventStream:
    """A 200 ``text/event-stream`` response written as ``body`` produces it; ``on_disconnect`` runs if the
    client leaves first (the app awaits :meth:`run` instead of sending a finished body)."""

    status = 200

    def __init__(
        self,
        body: AsyncIterator[bytes],
        on_disconnect: Callable[[], None],
        error_event: Callable[[BaseException], bytes],
    ):
        self.body, self.on_disconnect, self.error_event = body, on_disconnect, error_event
        self.sent = 0

    async def run(self, send: Callable, receive: Callable) -> int:
        """Stream it; returns the body bytes sent. A failure after the head is sent ends the stream with
        ``error_event(exc)`` (the status is already 200, so clients read errors from the events)."""
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        async with watch(receive, self.on_disconnect) as gone:
            try:
                async for chunk in self.body:
                    if gone.is_set():
                        break
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                        self.sent += len(chunk)
            except Exception as exc:
                if not isinstance(exc, AiosError):
                    log.exception("a stream failed")
                chunk = self.error_event(exc)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self.sent += len(chunk)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return self.sent


__all__ = ["EventStream", "event", "watch", "DONE", "HEADERS"]
