"""The steps every language-model route shares: read the JSON body, find the model, queue the request (again,
on the new version, if a hot swap retired the old one in between), and collect a result that is not streamed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson

from ...errors import AiosError
from ..errors import NoRoute, Unavailable
from ..http import Disconnected, Request
from ..routes import inflate
from .errors import BadParam, ModelNotFound, Retired
from .group import Group
from .sse import watch

if TYPE_CHECKING:
    from ..app import V2App
    from ..repository import Served

THREAD_BYTES = 256 * 1024  # bodies (and prompts) this large are parsed and tokenised in a thread


class GenerationFailed(AiosError):
    """The engine failed while generating (500); the server keeps serving."""

    status = 500


async def read_json(req: Request, app: V2App) -> tuple[dict, int]:
    """The request's JSON object and its size in bytes (413 past the body limit, 400 when not a JSON object)."""
    cfg = app.settings
    body = await req.body(cfg.max_body_bytes, cfg.body_timeout_s, app.deadlines)
    if req.content_encoding:
        body = await inflate(body, req.content_encoding, cfg.max_body_bytes)
    try:
        doc = orjson.loads(body) if len(body) < THREAD_BYTES else await asyncio.to_thread(orjson.loads, body)
    except orjson.JSONDecodeError as exc:
        raise BadParam(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadParam("the request body must be a JSON object")
    return doc, len(body)


def parse_model(value: object) -> tuple[str, str | None]:
    """OpenAI's ``model``: ``NAME`` (what the model serves by default: its production alias when it has one),
    ``NAME:VERSION`` (``3`` or ``v3``) or ``NAME:ALIAS``."""
    if not isinstance(value, str) or not value:
        raise BadParam("model is required: a name from GET /v1/models, such as 'mymodel' or 'mymodel:2'", "model")
    name, _, ref = value.partition(":")
    if ref[:1] == "v" and ref[1:].isdecimal():
        ref = ref[1:]
    return name, ref or None


def find(app: V2App, name: str, version: str | None) -> Served:
    """The served language-model version for ``name`` (404 unknown, 400 when it is not a language model)."""
    try:
        served = app.repository.route(name, version)
    except NoRoute:
        label = name if version is None else f"{name}:{version}"
        raise ModelNotFound(
            f"the model {label!r} is not served here; GET /v1/models lists the language models"
        ) from None
    if served.engine is None:
        raise BadParam(
            f"model {name!r} is not a language model: call POST /v2/models/{name}/infer with tensors instead",
            "model",
        )
    return served


async def start(
    app: V2App, name: str, version: str | None, build: Callable[[Served], Group], heavy: bool = False
) -> tuple[Served, Group]:
    """Route, build the request's :class:`Group` for that version (its tokenizer) and queue it; when the
    version retired meanwhile (hot swap), route again: a request never fails because of a swap."""
    for _ in range(5):
        served = find(app, name, version)
        group = await asyncio.to_thread(build, served) if heavy else build(served)
        try:
            served.engine.submit(group)
            return served, group
        except Retired:
            continue
    raise Unavailable(f"model {name!r} is being swapped right now; retry")


def failure(finish: str) -> AiosError:
    """The error for a sequence that ended with ``abort`` (the server stopping) or ``error``."""
    if finish == "abort":
        return Unavailable("the server is shutting down; retry on another endpoint or later")
    return GenerationFailed("generation failed on the server; see its log")


async def collect(group: Group, receive: Callable) -> tuple[list[str], list[str]]:
    """The texts and finish reasons of every sequence (raises Disconnected when the client left first)."""
    n = len(group.seqs)
    texts, finishes = [""] * n, [""] * n
    async with watch(receive, group.cancel):
        while not group.finished and not group.cancelled:
            for i, text, finish in await group.next():
                texts[i] += text
                if finish:
                    finishes[i] = finish
    if group.cancelled:
        raise Disconnected()
    for f in finishes:
        if f not in ("stop", "length"):
            raise failure(f)
    return texts, finishes


def usage(group: Group) -> dict:
    done = group.completion_tokens
    return {"prompt_tokens": group.prompt_tokens, "completion_tokens": done, "total_tokens": group.prompt_tokens + done}


__all__ = ["read_json", "parse_model", "find", "start", "collect", "usage", "failure", "GenerationFailed"]
