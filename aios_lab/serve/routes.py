"""Routing of the V2 data plane: health, server and model metadata, readiness, configuration, infer, metrics.

Routes (``[/versions/V]`` optional; V is a number or an alias):

    GET  /v2/health/live | /v2/health/ready               no token
    GET  /v2                                              server metadata          infer|admin
    GET  /v2/models/M[/versions/V]                        model metadata           infer|admin
    GET  /v2/models/M[/versions/V]/ready | /config        readiness, configuration infer|admin
    POST /v2/models/M[/versions/V]/infer                  inference                infer|admin
    POST /v2/models/M[/versions/V]/generate[_stream]      language models, see :mod:`.llm.generate_routes`
    GET|POST /v1/...                                      OpenAI routes, see :mod:`.llm.openai_routes`
    POST /v2/repository/...                               see :mod:`.admin`        admin
    GET|POST /v2/repository/models/M/canary               see :mod:`.canary`       admin
    GET  /metrics | /openapi.json                                                  infer|admin

Health answers come straight from :meth:`Router.dispatch`, never behind a body, a parse or a forward
pass. Infer reads the body (limits: bytes, time), parses it inline or, when large, in the helper
process, then batches, and encodes the response (large ones in the helper too).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import orjson

from .. import __version__
from ..errors import Forbidden
from .errors import MethodNotAllowed, NoRoute, ProtocolError, Unavailable
from .http import JSON, Request, Response, ok
from .protocol import compress, decompress, encode_response, parse_infer
from .repository import Served

if TYPE_CHECKING:
    from .app import V2App

EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration", "generate"]
ACTIONS = ("ready", "config", "infer", "generate", "generate_stream")
POSTS = ("infer", "generate", "generate_stream")
COMPRESS_MIN = 1024  # infer responses smaller than this are never compressed
THREAD_ZLIB_BYTES = 64 * 1024  # bodies this large are (de)compressed in a thread (zlib frees the GIL)

_LIVE = orjson.dumps({"live": True})
_READY = orjson.dumps({"ready": True})
_BINARY = (b"content-type", b"application/octet-stream")


class Router:
    """Maps a request to its handler; ``ctx`` collects (route, model, version) for the metrics and the log."""

    def __init__(self, app: V2App):
        self.app = app
        self.settings = app.settings
        self._server_meta = orjson.dumps({"name": "aios_lab", "version": __version__, "extensions": EXTENSIONS})
        from .openapi import document

        self._openapi = orjson.dumps(document(__version__))

    def auth(self, req: Request, admin: bool = False, model: str | None = None) -> None:
        role = self.app.tokens.role(req.authorization)
        if admin and role != "admin":
            raise Forbidden("this route needs a token with the admin role; yours has the infer role")
        if model is not None:  # a token scoped to other models gets 403
            self.app.tokens.check_model(req.authorization, model)

    @staticmethod
    def method(req: Request, allowed: str) -> None:
        if req.method != allowed:
            raise MethodNotAllowed(allowed)

    def dispatch(self, req: Request, ctx: list) -> Response | Awaitable[Response]:
        """A finished response, or the coroutine that makes it (infer, repository): the caller awaits it
        directly, so a request resumes through as few coroutine levels as possible."""
        path = req.path
        if path.startswith("/v2/models/"):
            return self._model_route(req, ctx, path[11:])
        if path.startswith("/v1/"):
            return self.app.openai.dispatch(req, ctx)
        if path.startswith("/v2/health/"):
            ctx[0] = "health"
            what = path[11:]
            if what not in ("live", "ready"):
                raise NoRoute(f"no route {path}")
            self.method(req, "GET")
            if what == "live":
                return Response(200, _LIVE)
            app = self.app
            if app.ready and not app.draining:
                return Response(200, _READY)
            raise Unavailable("server is " + ("draining" if app.draining else "starting"))
        if path == "/v2":
            ctx[0] = "server"
            self.method(req, "GET")
            self.auth(req)
            return Response(200, self._server_meta)
        if path.startswith("/v2/repository/models/") and path.endswith("/canary"):
            return self.app.canary.handle(req, ctx, path[22:-7])
        if path.startswith("/v2/repository/"):
            return self.app.admin.handle(req, ctx, path[15:])
        if path == "/metrics":
            ctx[0] = "metrics"
            self.method(req, "GET")
            self.auth(req)
            self.app.tokens.check_unscoped(req.authorization, "/metrics")
            m = self.app.metrics
            return Response(200, m.render(), [(b"content-type", m.content_type.encode())])
        if path == "/openapi.json":
            ctx[0] = "openapi"
            self.method(req, "GET")
            self.auth(req)
            return Response(200, self._openapi)
        raise NoRoute(f"no route {path}: see /openapi.json")

    def _model_route(self, req: Request, ctx: list, rest: str) -> Response | Awaitable[Response]:
        parts = rest.split("/")
        name, version = parts[0], None
        if len(parts) >= 3 and parts[1] == "versions":
            version = parts[2]
            tail = parts[3:]
        else:
            tail = parts[1:]
        if len(tail) > 1 or (tail and tail[0] not in ACTIONS) or not name or version == "":
            raise NoRoute(f"no route {req.path}: see /openapi.json")
        action = tail[0] if tail else "metadata"
        ctx[0] = action
        self.method(req, "POST" if action in POSTS else "GET")
        self.auth(req, model=name)
        repo = self.app.repository
        served = repo.route(name, version)
        if version is None and action == "infer" and self.app.canary.active:
            served, canary, arm = self.app.canary.pick(name, served, req)
            if canary is not None and served.engine is None:
                ctx[1], ctx[2] = name, served.vstr
                return self.app.canary.observe(self._infer(req, served), canary, arm, served, req.t0)
        ctx[1], ctx[2] = name, served.vstr  # labels only for served models: clients cannot grow the metrics
        if action == "infer":
            if served.engine is not None:
                raise ProtocolError(
                    f"model {name!r} is a language model: POST /v2/models/{name}/generate with "
                    '{"text_input": "..."}, or use /v1/chat/completions'
                )
            return self._infer(req, served)
        if action in ("generate", "generate_stream"):
            if served.engine is None:
                raise ProtocolError(f"model {name!r} is not a language model: POST /v2/models/{name}/infer instead")
            return self.app.generate.handle(req, ctx, name, version, action == "generate_stream")
        if action == "ready":
            return ok({"name": name, "ready": True})
        if action == "metadata":
            return ok(
                {
                    "name": name,
                    "versions": repo.version_names(name),
                    "platform": "jax_xla",
                    "inputs": served.signature["inputs"],
                    "outputs": served.signature["outputs"],
                }
            )
        return ok(model_config(served))

    async def _infer(self, req: Request, served: Served) -> Response:
        app, cfg = self.app, self.settings
        body = await req.body(cfg.max_body_bytes, cfg.body_timeout_s, app.deadlines)
        batcher = served.batcher
        batcher.arriving += 1  # counted only now that its body is in
        try:
            if req.content_encoding:
                body = await inflate(body, req.content_encoding, cfg.max_body_bytes)
            offload = app.offload
            if len(body) >= offload.min_bytes and offload.wants(len(body), req.ihcl):
                parsed = await offload.parse(body, req.ihcl, served.signature, cfg.max_rows)
            else:
                parsed = parse_infer(body, req.ihcl, served.signature, cfg.max_rows)
        finally:
            batcher.arriving -= 1
        del body
        results = await batcher.submit(parsed.inputs, parsed.rows)
        outs = served.signature["outputs"]
        if parsed.rows * served.values_per_row >= app.offload.min_values and app.offload.wants_encode(parsed, results):
            out, hlen = await app.offload.encode(served.name, served.vstr, parsed, results, outs)
        else:
            out, hlen = encode_response(served.name, served.vstr, parsed, results, outs)
        headers = list(JSON) if hlen is None else [_BINARY, (b"inference-header-content-length", str(hlen).encode())]
        if req.accept_encoding and len(out) >= COMPRESS_MIN:
            if len(out) >= THREAD_ZLIB_BYTES:
                out, enc = await asyncio.to_thread(compress, out, req.accept_encoding)
            else:
                out, enc = compress(out, req.accept_encoding)
            if enc:
                headers.append((b"content-encoding", enc.encode()))
        return Response(200, out, headers)


async def inflate(body: bytes | bytearray, encoding: str, limit: int) -> bytes:
    """Undo ``Content-Encoding``; a large body in a thread (zlib releases the GIL while it works)."""
    if len(body) >= THREAD_ZLIB_BYTES:
        return await asyncio.to_thread(decompress, body, encoding, limit)
    return decompress(body, encoding, limit)


def model_config(s: Served) -> dict:
    """Triton's model configuration, as JSON, for one served version."""
    if s.engine is not None:
        return llm_config(s)
    to_cfg = lambda t: {
        "name": t["name"],
        "data_type": "TYPE_" + ("STRING" if t["datatype"] == "BYTES" else t["datatype"]),
        "dims": t["shape"][1:],
    }
    b = s.batcher
    return {
        "name": s.name,
        "platform": "jax_xla",
        "backend": "jax",
        "version_policy": {"specific": {"versions": [s.version]}},
        "max_batch_size": b.max_batch_size,
        "input": [to_cfg(t) for t in s.signature["inputs"]],
        "output": [to_cfg(t) for t in s.signature["outputs"]],
        "dynamic_batching": {
            "preferred_batch_size": b.buckets,
            "max_queue_delay_microseconds": int(b.max_queue_delay * 1e6),
        }
        if b.enabled
        else None,
        "parameters": {"version": {"string_value": s.vstr}},
    }


def llm_config(s: Served) -> dict:
    """A language model's configuration: text in and out, and the engine's slots and context."""
    e, cfg = s.engine, s.model.cfg
    return {
        "name": s.name,
        "platform": "jax_xla",
        "backend": "jax",
        "model_transaction_policy": {"decoupled": True},
        "version_policy": {"specific": {"versions": [s.version]}},
        "max_batch_size": 0,
        "input": [{"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]}],
        "output": [{"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]}],
        "parameters": {
            "version": {"string_value": s.vstr},
            "family": {"string_value": cfg.family},
            "kv_slots": {"string_value": str(e.slots)},
            "max_model_len": {"string_value": str(e.max_len)},
            "chat_template": {"string_value": str(s.model.template is not None).lower()},
        },
    }
