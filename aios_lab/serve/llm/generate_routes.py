"""The Open Inference Protocol's generate extension, as Triton defines it, for language models.

    POST /v2/models/M[/versions/V]/generate          {"text_input": str, "parameters": {...}}
        -> {"model_name", "model_version", "text_output", "finish_reason"}
    POST /v2/models/M[/versions/V]/generate_stream   same request -> SSE, one ``data:`` object per step
        with the new ``text_output``; the last one carries ``finish_reason``

``text_input`` is a plain prompt (no chat template). Parameters: ``max_tokens`` (default 16),
``temperature`` (default 1), ``top_p``, ``top_k``, ``seed``, ``stop`` (or ``stop_words``); other
top-level keys are read as parameters too, as Triton does. Errors are the V2 shape ``{"error": "..."}``;
one after the stream started is a ``data: {"error": "..."}`` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING

import orjson

from ...errors import AiosError
from ..http import Request, ok
from . import params
from .errors import BadParam
from .group import Group
from .sse import EventStream, event
from .submit import THREAD_BYTES, collect, failure, read_json, start

if TYPE_CHECKING:
    from ..app import V2App
    from ..repository import Served

DEFAULT_MAX_TOKENS = 16


def error_event(exc: BaseException) -> bytes:
    message = str(exc) if isinstance(exc, AiosError) else f"internal error: {type(exc).__name__}"
    return b"data: " + orjson.dumps({"error": message}) + b"\n\n"


class GenerateRoutes:
    """Handlers of ``.../generate`` and ``.../generate_stream``."""

    def __init__(self, app: V2App):
        self.app = app

    async def handle(self, req: Request, ctx: list, name: str, version: str | None, stream: bool):
        doc, size = await read_json(req, self.app)
        text = doc.get("text_input")
        if not isinstance(text, str):
            raise BadParam("the request needs 'text_input': the prompt, as a string", "text_input")
        extra = doc.get("parameters") or {}
        if not isinstance(extra, dict):
            raise BadParam("'parameters' must be an object", "parameters")
        p = {k: v for k, v in doc.items() if k not in ("text_input", "parameters")} | extra
        if "stop" not in p and "stop_words" in p:
            p["stop"] = p.pop("stop_words")
        p.pop("stream", None)

        def build(served: Served) -> Group:
            s = params.sampling(p, 1)
            ids = served.model.encode(text)
            if s.max_tokens is None:
                s = replace(s, max_tokens=max(1, min(DEFAULT_MAX_TOKENS, served.engine.max_len - len(ids))))
            return served.engine.group([ids], s, "prompt")

        served, group = await start(self.app, name, version, build, heavy=size > THREAD_BYTES)
        ctx[1], ctx[2] = served.name, served.vstr
        head = {"model_name": served.name, "model_version": served.vstr}
        if stream:
            return EventStream(_events(group, head), group.cancel, error_event)
        texts, finishes = await collect(group, req.receive)
        return ok({**head, "text_output": texts[0], "finish_reason": finishes[0]})


async def _events(group: Group, head: dict) -> AsyncIterator[bytes]:
    while not group.finished and not group.cancelled:
        out = []
        for _, text, finish in await group.next():
            if finish and finish not in ("stop", "length"):
                out.append(error_event(failure(finish)))
                yield b"".join(out)
                return
            doc = {**head, "text_output": text}
            if finish:
                doc["finish_reason"] = finish
            out.append(event(doc))
        yield b"".join(out)


__all__ = ["GenerateRoutes"]
