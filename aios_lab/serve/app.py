"""The V2 inference server as a bare ASGI application, put together from its parts.

A bare ASGI callable rather than a framework: it answers about 1.6x more requests per second on this
kind of machine, and the V2 routing table is small enough to read as code. The parts, one job each:
:mod:`.http` (request, body limits, response), :mod:`.routes` (data plane), :mod:`.admin` (model
repository), :mod:`.lifecycle` (start-up, background work, shutdown), :mod:`.offload` (large bodies
off the event loop), :mod:`.settings` (every default), :mod:`.llm` (language models: the OpenAI routes,
the generate extension, continuous batching). Every non-200 response is ``{"error": "..."}``, or
OpenAI's ``{"error": {"message", "type", "param", "code"}}`` on ``/v1``; token streams are
:class:`.llm.sse.EventStream` responses.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from ..errors import AiosError
from .admin import RepositoryAdmin
from .auth import TokenCache
from .canary import Canaries
from .control import EndpointRow
from .errors import Overloaded
from .http import JSON, BodyDeadlines, Disconnected, Request, Response, error_response
from .lifecycle import Lifecycle
from .llm.errors import openai_error
from .llm.generate_routes import GenerateRoutes
from .llm.metrics import LLMMetrics
from .llm.openai_routes import OpenAIRoutes
from .llm.sse import EventStream
from .metrics import Metrics
from .offload import Offload
from .repository import Repository
from .routes import Router
from .settings import DEFAULTS, ServeSettings

log = logging.getLogger("aios_lab.serve")


def _openai_error(exc: BaseException) -> Response:
    """An error of a ``/v1`` route in OpenAI's shape (with the error's own headers, e.g. Retry-After)."""
    status, body = openai_error(exc)
    return Response(status, body, JSON + list(getattr(exc, "headers", ())))


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
    """The ASGI app. ``repository`` holds the models; ``tokens`` checks bearer tokens; ``row`` writes the
    endpoint's catalog row (see :class:`.lifecycle.Lifecycle`)."""

    def __init__(
        self,
        repository: Repository | None = None,
        *,
        settings: ServeSettings = DEFAULTS,
        metrics: Metrics | None = None,
        tokens: TokenCache | None = None,
        access_log: Any = None,
        row: EndpointRow | None = None,
    ):
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.repository = repository or Repository(settings=settings)
        if self.repository.batch_observer is None:
            self.repository.batch_observer = self.metrics.batch_observer
        self.llm_metrics = LLMMetrics(self.metrics.registry)
        if self.repository.engine_stats is None:
            self.repository.engine_stats = self.llm_metrics.stats
        self.tokens = tokens or TokenCache()
        self.access_log = access_log  # a file, binary (cheapest) or text, of JSON lines flushed each second; or None
        self._log_bytes = access_log is not None and not isinstance(access_log, io.TextIOBase)
        self.ready = False
        self.draining = False
        self.unloaded: set[str] = set()  # unloaded by a repository call: not picked up again by the poll
        self.deadlines = BodyDeadlines()
        offloaded = self.metrics.offloaded
        self.offload = Offload(
            settings.offload_bytes, settings.offload_pending, count=lambda w: offloaded.labels(w).inc()
        )
        self.router = Router(self)
        self.admin = RepositoryAdmin(self)
        self.openai = OpenAIRoutes(self)
        self.generate = GenerateRoutes(self)
        self.canary = Canaries(self)  # splits of unversioned infer routes (see .canary)
        self.lifecycle = Lifecycle(self, row)
        self._chain_hooks()

    def _chain_hooks(self) -> None:
        repo, m, life = self.repository, self.metrics, self.lifecycle
        prev_load, prev_drop, prev_change = repo.on_load, repo.on_drop, repo.on_change

        llm = self.llm_metrics

        def on_load(s):
            if s.engine is not None:
                llm.track(s.engine)
                s.engine.on_stop = llm.untrack
            else:
                m.track_version(s.name, s.vstr, s.batcher)
            if prev_load:
                prev_load(s)

        def on_drop(s):
            if s.engine is not None:  # streams in progress finish on it; its gauges go when it stops
                s.engine.retire()
            else:
                m.untrack_version(s.name, s.vstr)
            if prev_drop:
                prev_drop(s)

        def on_change(r):
            if self.ready:
                life.write_row("draining" if self.draining else "running")
            if prev_change:
                prev_change(r)

        repo.on_load, repo.on_drop, repo.on_change = on_load, on_drop, on_change

    async def startup(self) -> None:
        await self.lifecycle.startup()

    async def shutdown(self) -> None:
        await self.lifecycle.shutdown()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        # HTTP is handled right here rather than in a method awaited from here: every coroutine level
        # between the server and the batcher's future costs each request a resumption.
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.lifecycle.lifespan(receive, send)
            return
        t0 = time.perf_counter()
        req = Request(scope, receive, t0)
        ctx = ["other", "", ""]  # route, model, version (for metrics and the log)
        try:
            resp = self.router.dispatch(req, ctx)
            if not isinstance(resp, Response):  # the infer, repository or language-model coroutine
                resp = await resp
        except Disconnected:
            resp = None
        except Exception as exc:  # an AiosError answers its own status; anything else is a bug: 500
            if not isinstance(exc, AiosError):
                log.exception("error handling %s %s", req.method, req.path)
            elif isinstance(exc, Overloaded):
                self.metrics.reject(ctx[1], exc.reason)
            resp = _openai_error(exc) if req.path.startswith("/v1/") else error_response(exc)
        status = 499 if resp is None else resp.status
        sent = 0
        if type(resp) is EventStream:  # a token stream: written as the engine produces it
            sent = await resp.run(send, req.receive)
        elif resp is not None:
            sent = len(resp.body)
            headers = resp.headers + [(b"content-length", str(sent).encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": resp.body})
        self.observed(req, ctx, status, time.perf_counter() - t0, sent)

    def observed(self, req: Request, ctx: list, status: int, dt: float, sent: int) -> None:
        """A request answered (on this port or the TF Serving one): its metrics and its access-log line."""
        self.metrics.observe(ctx[0], ctx[1], ctx[2], status, dt)
        if self.access_log is not None:
            line = _access_line(req, ctx, status, dt, sent)
            self.access_log.write(line if self._log_bytes else line.decode())
