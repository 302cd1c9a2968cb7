"""The OpenAI-compatible routes: what the official ``openai`` client, and the UIs and SDKs built on it, call.

    GET  /v1/models                 the served language models (NAME, and NAME:VERSION per loaded version)
    GET  /v1/models/NAME[:V]        one of them
    POST /v1/completions            prompt(s) -> text; stream: SSE chunks then ``data: [DONE]``
    POST /v1/chat/completions       messages, through the model's chat template -> the assistant's reply

Tokens and roles as on the V2 routes (``Authorization: Bearer ...``, infer or admin; a token scoped to some
models gets 403 on the others, and ``/v1/models`` lists only those). Every error is
OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``; an error after a stream started comes
as a ``data: {"error": ...}`` event. A response's ``model`` is the version that answered (``NAME:3``), as
OpenAI answers a model alias with its dated snapshot.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace
from typing import TYPE_CHECKING

from ..errors import NoRoute
from ..http import Request, Response, ok
from . import params
from .errors import openai_error
from .group import Group
from .sse import DONE, EventStream, event
from .submit import THREAD_BYTES, collect, failure, find, parse_model, read_json, start, usage

if TYPE_CHECKING:
    from ..app import V2App
    from ..repository import Served

COMPLETIONS_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat defaults to the rest of the context


def error_event(exc: BaseException) -> bytes:
    """An error after the stream started: a ``data:`` event in OpenAI's error shape (the client raises it)."""
    return b"data: " + openai_error(exc)[1] + b"\n\n"


class OpenAIRoutes:
    """Handlers of ``/v1/...``."""

    def __init__(self, app: V2App):
        self.app = app

    def dispatch(self, req: Request, ctx: list) -> Response | Awaitable[Response | EventStream]:
        path, router = req.path, self.app.router
        if path == "/v1/models" or path.startswith("/v1/models/"):
            ctx[0] = "v1_models"
            router.method(req, "GET")
            router.auth(req)
            scope = self.app.tokens.scope(req.authorization)
            if path == "/v1/models":
                return ok({"object": "list", "data": self.models(scope)})
            ref = path[len("/v1/models/") :]
            self.app.tokens.check_model(req.authorization, parse_model(ref)[0])
            return ok(self.model(ref))
        if path == "/v1/chat/completions":
            ctx[0] = "v1_chat"
            router.method(req, "POST")
            router.auth(req)
            return self.chat(req, ctx)
        if path == "/v1/completions":
            ctx[0] = "v1_completions"
            router.method(req, "POST")
            router.auth(req)
            return self.completions(req, ctx)
        raise NoRoute(f"no route {path}: the OpenAI routes are /v1/models, /v1/completions, /v1/chat/completions")

    # -- models ---------------------------------------------------------------------------------
    def models(self, scope: frozenset[str] | None = None) -> list[dict]:
        """The language models served (only those a scoped token may use)."""
        out = []
        repo = self.app.repository
        for name, e in sorted(repo.entries.items()):
            default = e.versions[e.default]
            if default.engine is None or (scope is not None and name not in scope):
                continue
            out.append(_model_card(name, default))
            for v, s in sorted(e.versions.items()):
                out.append(_model_card(f"{name}:{v}", s))
        return out

    def model(self, ref: str) -> dict:
        name, version = parse_model(ref)
        return _model_card(ref, find(self.app, name, version))

    # -- chat -----------------------------------------------------------------------------------
    async def chat(self, req: Request, ctx: list) -> Response | EventStream:
        doc, size = await read_json(req, self.app)
        name, version = parse_model(doc.get("model"))
        self.app.tokens.check_model(req.authorization, name)  # a token scoped to other models: 403
        find(self.app, name, version)  # an unknown model is a 404 whatever else is wrong
        msgs = params.messages(doc)
        stream, include_usage = params.stream_options(doc)

        def build(served: Served) -> Group:
            s = params.sampling(doc, served.engine.slots)
            return served.engine.group([served.model.encode_chat(msgs)], s, "chat")

        served, group = await start(self.app, name, version, build, heavy=size > THREAD_BYTES)
        ctx[1], ctx[2] = served.name, served.vstr
        head = _head("chatcmpl", "chat.completion", served)
        if stream:
            body = _chat_chunks(group, head, include_usage)
            return EventStream(body, group.cancel, error_event)
        texts, finishes = await collect(group, req.receive)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": t},
                "logprobs": None,
                "finish_reason": f,
            }
            for i, (t, f) in enumerate(zip(texts, finishes))
        ]
        return ok({**head, "choices": choices, "usage": usage(group)})

    # -- completions ----------------------------------------------------------------------------
    async def completions(self, req: Request, ctx: list) -> Response | EventStream:
        doc, size = await read_json(req, self.app)
        name, version = parse_model(doc.get("model"))
        self.app.tokens.check_model(req.authorization, name)
        find(self.app, name, version)
        prompts = params.prompts(doc)
        stream, include_usage = params.stream_options(doc)
        default_budget = doc.get("max_tokens") is None and doc.get("max_completion_tokens") is None

        def build(served: Served) -> Group:
            s = params.sampling(doc, served.engine.slots)
            ids = [served.model.encode(p) if isinstance(p, str) else p for p in prompts]
            if default_budget:  # OpenAI's default of 16, or what is left of a nearly full context
                room = min(served.engine.max_len - len(i) for i in ids)
                s = replace(s, max_tokens=max(1, min(COMPLETIONS_MAX_TOKENS, room)))
            return served.engine.group(ids, s, "prompt")

        served, group = await start(self.app, name, version, build, heavy=size > THREAD_BYTES)
        ctx[1], ctx[2] = served.name, served.vstr
        head = _head("cmpl", "text_completion", served)
        if stream:
            return EventStream(_completion_chunks(group, head, include_usage), group.cancel, error_event)
        texts, finishes = await collect(group, req.receive)
        choices = [
            {"index": i, "text": t, "logprobs": None, "finish_reason": f}
            for i, (t, f) in enumerate(zip(texts, finishes))
        ]
        return ok({**head, "choices": choices, "usage": usage(group)})


def _model_card(model_id: str, served: Served) -> dict:
    return {
        "id": model_id,
        "object": "model",
        "created": int(served.loaded),
        "owned_by": "aios_lab",
        "max_model_len": served.engine.max_len,
    }


def _head(prefix: str, obj: str, served: Served) -> dict:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": obj,
        "created": int(time.time()),
        "model": f"{served.name}:{served.vstr}",
        "system_fingerprint": f"aios_lab-{served.name}-v{served.vstr}",
    }


async def _chat_chunks(group: Group, head: dict, include_usage: bool) -> AsyncIterator[bytes]:
    base = {**head, "object": "chat.completion.chunk"}
    if include_usage:
        base["usage"] = None
    choice = lambda i, delta, finish: {
        **base,
        "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    yield b"".join(event(choice(s.index, {"role": "assistant", "content": ""}, None)) for s in group.seqs)
    while not group.finished and not group.cancelled:
        out = []
        for i, text, finish in await group.next():
            if finish and finish not in ("stop", "length"):
                out.append(error_event(failure(finish)))
                yield b"".join(out)
                return
            if text:
                out.append(event(choice(i, {"content": text}, None)))
            if finish:
                out.append(event(choice(i, {}, finish)))
        yield b"".join(out)
    if group.cancelled:
        return
    if include_usage:
        yield event({**base, "choices": [], "usage": usage(group)})
    yield DONE


async def _completion_chunks(group: Group, head: dict, include_usage: bool) -> AsyncIterator[bytes]:
    base = dict(head)
    if include_usage:
        base["usage"] = None
    while not group.finished and not group.cancelled:
        out = []
        for i, text, finish in await group.next():
            if finish and finish not in ("stop", "length"):
                out.append(error_event(failure(finish)))
                yield b"".join(out)
                return
            if text or finish:
                out.append(
                    event({**base, "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": finish}]})
                )
        yield b"".join(out)
    if group.cancelled:
        return
    if include_usage:
        yield event({**base, "choices": [], "usage": usage(group)})
    yield DONE


__all__ = ["OpenAIRoutes", "error_event"]
