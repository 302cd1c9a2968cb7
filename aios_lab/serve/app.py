"""The V2 inference server as a bare ASGI application.

A bare ASGI callable rather than Starlette: on this machine it answers about 1.6x more requests per
second (toolchain.md), and the routing table of the V2 protocol is small enough to read as code.
Every non-200 response is ``{"error": "..."}``.

Routes (``[/versions/V]`` optional; V is a number or an alias):

    GET  /v2/health/live | /v2/health/ready               no token
    GET  /v2                                              server metadata          infer|admin
    GET  /v2/models/M[/versions/V]                        model metadata           infer|admin
    GET  /v2/models/M[/versions/V]/ready | /config        readiness, configuration infer|admin
    POST /v2/models/M[/versions/V]/infer                  inference                infer|admin
    POST /v2/repository/index                             model repository         admin
    POST /v2/repository/models/M/load | /unload           load (hot swap), unload  admin
    GET  /metrics | /openapi.json                                                  infer|admin
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from .. import __version__
from .auth import TokenCache
from .metrics import Metrics
from .protocol import ProtocolError, compress, decompress, encode_response, loads, parse_infer
from .repository import Repository

log = logging.getLogger("aios_lab.serve")

EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration"]
DEFAULT_MAX_BODY = 64 * 1024 * 1024
COMPRESS_MIN = 1024  # infer responses smaller than this are never compressed

_JSON = [(b"content-type", b"application/json")]
_LIVE = orjson.dumps({"live": True})
_READY = orjson.dumps({"ready": True})


class Disconnected(Exception):
    pass


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
        "client",
        "receive",
        "body_len",
    )

    def __init__(self, scope: dict, receive: Callable):
        self.method, self.path, self.receive = scope["method"], scope["path"], receive
        self.authorization = self.ihcl = self.content_encoding = self.accept_encoding = self.content_length = None
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
        self.client = scope.get("client")
        self.body_len = 0

    async def body(self, limit: int) -> bytes:
        if self.content_length is not None:
            try:
                if int(self.content_length) > limit:
                    raise ProtocolError(
                        f"request body of {self.content_length} bytes is over the {limit}-byte limit", 413
                    )
            except ValueError:
                raise ProtocolError("bad Content-Length header") from None
        msg = await self.receive()
        if msg["type"] == "http.disconnect":
            raise Disconnected()
        body = msg.get("body", b"")
        if msg.get("more_body"):
            chunks, n = [body], len(body)
            while msg.get("more_body"):
                msg = await self.receive()
                if msg["type"] == "http.disconnect":
                    raise Disconnected()
                chunk = msg.get("body", b"")
                n += len(chunk)
                if n > limit:
                    raise ProtocolError(f"request body is over the {limit}-byte limit", 413)
                chunks.append(chunk)
            body = b"".join(chunks)
        if len(body) > limit:
            raise ProtocolError(f"request body is over the {limit}-byte limit", 413)
        self.body_len = len(body)
        return body


class Response(Exception):
    """A finished response (raised or returned by handlers)."""

    def __init__(self, status: int, body: bytes = b"", headers: list | None = None):
        self.status, self.body, self.headers = status, body, headers if headers is not None else _JSON


def error(status: int, message: str, headers: list | None = None) -> Response:
    return Response(status, orjson.dumps({"error": message}), _JSON + (headers or []))


def ok(doc: Any) -> Response:
    return Response(200, orjson.dumps(doc))


def _access_line(req: Request, ctx: list, status: int, dt: float, bytes_out: int) -> bytes:
    client = req.client
    return orjson.dumps(
        {
            "time": time.time(),
            "method": req.method,
            "path": req.path,
            "status": status,
            "us": int(dt * 1e6),
            "route": ctx[0],
            "model": ctx[1] or None,
            "version": ctx[2] or None,
            "bytes_in": req.body_len,
            "bytes_out": bytes_out,
            "client": f"{client[0]}:{client[1]}" if client else None,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


class V2App:
    """The ASGI app. ``repository`` holds the models; ``tokens`` checks bearer tokens."""

    def __init__(
        self,
        repository: Repository | None = None,
        *,
        metrics: Metrics | None = None,
        tokens: TokenCache | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY,
        models: list[str] | None = None,
        access_log: Any = None,
        poll_interval: float = 1.0,
        on_started: Callable[[V2App], None] | None = None,
        on_stopped: Callable[[V2App], None] | None = None,
    ):
        self.metrics = metrics or Metrics()
        self.repository = repository or Repository(batch_observer=self.metrics.batch_observer)
        if self.repository.batch_observer is None:
            self.repository.batch_observer = self.metrics.batch_observer
        self._chain_hooks()
        self.tokens = tokens or TokenCache()
        self.max_body_bytes = max_body_bytes
        self.models = models  # None: every model in the registry
        self.access_log = access_log  # a file, binary (cheapest) or text, of JSON lines flushed each second; or None
        self._log_bytes = access_log is not None and not isinstance(access_log, io.TextIOBase)
        self.poll_interval = poll_interval
        self.on_started, self.on_stopped = on_started, on_stopped
        self.ready = False
        self.draining = False
        self.unloaded: set[str] = set()  # unloaded by a repository call: not picked up again by the poll
        self._tasks: list[asyncio.Task] = []
        from .openapi import document

        self._openapi = orjson.dumps(document(__version__))
        self._server_meta = orjson.dumps({"name": "aios_lab", "version": __version__, "extensions": EXTENSIONS})

    def _chain_hooks(self) -> None:
        repo, m = self.repository, self.metrics
        prev_load, prev_drop = repo.on_load, repo.on_drop

        def on_load(s):
            m.track_version(s.name, s.vstr, s.batcher.depth)
            if prev_load:
                prev_load(s)

        def on_drop(s):
            m.untrack_version(s.name, s.vstr)
            if prev_drop:
                prev_drop(s)

        repo.on_load, repo.on_drop = on_load, on_drop

    # -- life cycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Load the models (compiling their buckets). Blocking; the lifespan runs it in a thread."""
        names = self.models if self.models is not None else self.repository.source.names()
        for name in names:
            ref: int | str | None = None
            if "@" in name:
                name, _, r = name.partition("@")
                ref = int(r) if r.isdigit() else r
            try:
                self.repository.load(name, ref)
            except Exception as exc:
                if self.models is not None:  # asked for by name: fail loudly
                    raise
                log.warning("not serving %s: %s", name, exc)

    async def startup(self) -> None:
        await asyncio.to_thread(self.start)
        loop = asyncio.get_running_loop()
        if self.poll_interval:
            self._tasks.append(loop.create_task(self._poll()))
        if self.access_log is not None:
            self._tasks.append(loop.create_task(self._flush()))
        if self.on_started:
            await asyncio.to_thread(self.on_started, self)
        gc.collect()
        gc.freeze()  # JAX's many long-lived objects would make every full collection ~30 ms
        self.ready = True

    async def shutdown(self) -> None:
        self.ready = False
        self.draining = True
        for t in self._tasks:
            t.cancel()
        if self.access_log is not None:
            self.access_log.flush()
        if self.on_stopped:
            await asyncio.to_thread(self.on_stopped, self)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await asyncio.to_thread(self.poll_once)
            except Exception as exc:  # keep polling; the registry may be mid-write
                log.warning("registry poll failed: %s", exc)

    def poll_once(self) -> None:
        """Follow moved aliases and new versions; when serving everything, pick up newly published models."""
        self.repository.refresh()
        if self.models is None:
            for name in self.repository.source.names():
                if name not in self.repository.entries and name not in self.unloaded:
                    try:
                        self.repository.load(name)
                    except Exception as exc:
                        self.unloaded.add(name)  # do not retry a broken model every second
                        log.warning("not serving new model %s: %s", name, exc)

    async def _flush(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.access_log.flush()

    # -- ASGI -------------------------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        # HTTP is handled right here rather than in a method awaited from here: every coroutine level
        # between the server and the batcher's future costs each request a resumption.
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.lifespan(receive, send)
            return
        t0 = time.perf_counter()
        req = Request(scope, receive)
        ctx = ["other", "", ""]  # route, model, version (for metrics and the log)
        try:
            resp = self.dispatch(req, ctx)
            if not isinstance(resp, Response):  # the infer or repository coroutine
                resp = await resp
        except Response as r:
            resp = r
        except ProtocolError as exc:
            resp = error(exc.status, str(exc))
        except Disconnected:
            resp = None
        except Exception as exc:  # a bug or a failed forward pass: still a V2 error body
            log.exception("error handling %s %s", req.method, req.path)
            resp = error(500, f"internal error: {type(exc).__name__}: {exc}")
        status = 499 if resp is None else resp.status
        if resp is not None:
            headers = resp.headers + [(b"content-length", str(len(resp.body)).encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": resp.body})
        dt = time.perf_counter() - t0
        self.metrics.observe(ctx[0], ctx[1], ctx[2], status, dt)
        if self.access_log is not None:
            line = _access_line(req, ctx, status, dt, len(resp.body) if resp is not None else 0)
            self.access_log.write(line if self._log_bytes else line.decode())

    async def lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- routing ----------------------------------------------------------------------------------
    def _auth(self, req: Request, admin: bool = False) -> None:
        role = self.tokens.role(req.authorization)
        if role is None:
            why = "missing" if not req.authorization else "invalid"
            raise error(
                401,
                f"{why} bearer token: send 'Authorization: Bearer TOKEN' (the default token is in "
                "AIOS_HOME/serve/token; `aios token create --role infer` makes another)",
                [(b"www-authenticate", b"Bearer")],
            )
        if admin and role != "admin":
            raise error(403, "this route needs a token with the admin role; yours has the infer role")

    @staticmethod
    def _method(req: Request, allowed: str) -> None:
        if req.method != allowed:
            raise error(405, "Method Not Allowed", [(b"allow", allowed.encode())])

    def dispatch(self, req: Request, ctx: list) -> Response | Awaitable[Response]:
        """A finished response, or the coroutine that makes it (infer, repository): the caller awaits it
        directly, so a request resumes through as few coroutine levels as possible."""
        path = req.path
        if path.startswith("/v2/models/"):
            return self._model_route(req, ctx, path[11:])
        if path.startswith("/v2/health/"):
            ctx[0] = "health"
            what = path[11:]
            if what not in ("live", "ready"):
                raise error(404, f"no route {path}")
            self._method(req, "GET")
            if what == "live":
                return Response(200, _LIVE)
            if self.ready and not self.draining:
                return Response(200, _READY)
            raise error(503, "server is " + ("draining" if self.draining else "starting"))
        if path == "/v2":
            ctx[0] = "server"
            self._method(req, "GET")
            self._auth(req)
            return Response(200, self._server_meta)
        if path.startswith("/v2/repository/"):
            return self._repository_route(req, ctx, path[15:])
        if path == "/metrics":
            ctx[0] = "metrics"
            self._method(req, "GET")
            self._auth(req)
            return Response(200, self.metrics.render(), [(b"content-type", self.metrics.content_type.encode())])
        if path == "/openapi.json":
            ctx[0] = "openapi"
            self._method(req, "GET")
            self._auth(req)
            return Response(200, self._openapi)
        raise error(404, f"no route {path}: see /openapi.json")

    def _model_route(self, req: Request, ctx: list, rest: str) -> Response | Awaitable[Response]:
        parts = rest.split("/")
        name, version, action = parts[0], None, ""
        if len(parts) >= 3 and parts[1] == "versions":
            version = parts[2]
            tail = parts[3:]
        else:
            tail = parts[1:]
        if len(tail) > 1 or (tail and tail[0] not in ("ready", "config", "infer")) or not name or version == "":
            raise error(404, f"no route {req.path}: see /openapi.json")
        action = tail[0] if tail else "metadata"
        ctx[0] = action
        self._method(req, "POST" if action == "infer" else "GET")
        self._auth(req)
        served = self.repository.route(name, version)
        ctx[1], ctx[2] = name, served.vstr  # labels only for served models: clients cannot grow the metrics
        if action == "infer":
            return self._infer(req, served)
        if action == "ready":
            return ok({"name": name, "ready": True})
        if action == "metadata":
            return ok(
                {
                    "name": name,
                    "versions": self.repository.version_names(name),
                    "platform": "jax_xla",
                    "inputs": served.signature["inputs"],
                    "outputs": served.signature["outputs"],
                }
            )
        return ok(self._config(served))

    async def _infer(self, req: Request, served) -> Response:
        batcher = served.batcher
        batcher.arriving += 1
        try:
            body = await req.body(self.max_body_bytes)
            if req.content_encoding:
                body = decompress(body, req.content_encoding, self.max_body_bytes)
            parsed = parse_infer(body, req.ihcl, served.signature)
        finally:
            batcher.arriving -= 1
        results = await batcher.submit(parsed.inputs, parsed.rows)
        out, hlen = encode_response(served.name, served.vstr, parsed, results, served.signature["outputs"])
        if hlen is None:
            headers = list(_JSON)
        else:
            headers = [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", str(hlen).encode()),
            ]
        if req.accept_encoding and len(out) >= COMPRESS_MIN:
            out, enc = compress(out, req.accept_encoding)
            if enc:
                headers.append((b"content-encoding", enc.encode()))
        return Response(200, out, headers)

    def _config(self, s) -> dict:
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

    async def _repository_route(self, req: Request, ctx: list, rest: str) -> Response:
        ctx[0] = "repository"
        parts = rest.split("/")
        if parts == ["index"]:
            action, name = "index", None
        elif len(parts) == 3 and parts[0] == "models" and parts[2] in ("load", "unload") and parts[1]:
            action, name = parts[2], parts[1]
        else:
            raise error(404, f"no route {req.path}: see /openapi.json")
        self._method(req, "POST")
        self._auth(req, admin=True)
        body = await req.body(self.max_body_bytes)
        if req.content_encoding:
            body = decompress(body, req.content_encoding, self.max_body_bytes)
        doc = loads(body) if body.strip() else {}
        if not isinstance(doc, dict):
            raise error(400, "the request body must be a JSON object")
        if action == "index":
            ready = doc.get("ready", False)
            if not isinstance(ready, bool):
                raise error(400, "'ready' must be true or false")
            return ok(await asyncio.to_thread(self.repository.index, ready))
        params = doc.get("parameters", {}) or {}
        if not isinstance(params, dict):
            raise error(400, "'parameters' must be an object")
        from ..errors import AiosError
        from ..names import NAME_RE

        if not NAME_RE.fullmatch(name):
            raise error(404, f"unknown model {name!r}")
        if action == "unload":
            self.unloaded.add(name)
            unloaded = self.repository.unload(name)
            if not unloaded and name not in await asyncio.to_thread(self.repository.source.names):
                raise error(404, f"unknown model {name!r}")
            return ok({})
        if "config" in params or any(str(k).startswith("file:") for k in params):
            raise error(
                501,
                "loading with a config or file override is not supported: publish a registry "
                "version instead (aios publish ... --as MODEL)",
            )
        ref = params.get("version")
        if ref is not None:
            if not isinstance(ref, (str, int)) or isinstance(ref, bool) or str(ref) == "":
                raise error(400, "'version' must be a version number or an alias")
            ref = int(ref) if str(ref).isdigit() else str(ref)
        if name not in await asyncio.to_thread(self.repository.source.names):
            raise error(404, f"unknown model {name!r}: the registry has no such model")
        if ref is not None:
            try:
                await asyncio.to_thread(self.repository.source.resolve, name, ref)
            except Exception as exc:
                raise error(404, f"cannot load {name!r}: {exc}") from None
        self.unloaded.discard(name)
        try:
            served = await asyncio.to_thread(self.repository.load, name, ref)
        except AiosError as exc:
            raise error(400, f"cannot load {name!r}: {exc}") from None
        except Exception as exc:
            raise error(400, f"cannot load {name!r}: {type(exc).__name__}: {exc}") from None
        ctx[1], ctx[2] = name, served.vstr
        return ok({"name": name, "version": served.vstr})
