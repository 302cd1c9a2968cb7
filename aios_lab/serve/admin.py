"""The model repository extension (admin tokens only): index, load (or hot-swap to a version), unload.

POST /v2/repository/index                  {"ready": bool}?          the models, READY or UNAVAILABLE + reason
POST /v2/repository/models/M/load          {"parameters": {"version": "3" | "staging"}}?
POST /v2/repository/models/M/unload
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..errors import AiosError, InvalidInput
from ..names import NAME_RE
from .errors import NoRoute, NotSupported
from .http import Request, Response, ok
from .protocol import loads
from .routes import inflate

if TYPE_CHECKING:
    from .app import V2App


class RepositoryAdmin:
    """Handlers of the repository routes; loads and registry reads run off the event loop."""

    def __init__(self, app: V2App):
        self.app = app

    async def handle(self, req: Request, ctx: list, rest: str) -> Response:
        app, cfg = self.app, self.app.settings
        ctx[0] = "repository"
        parts = rest.split("/")
        if parts == ["index"]:
            action, name = "index", None
        elif len(parts) == 3 and parts[0] == "models" and parts[2] in ("load", "unload") and parts[1]:
            action, name = parts[2], parts[1]
        else:
            raise NoRoute(f"no route {req.path}: see /openapi.json")
        app.router.method(req, "POST")
        app.router.auth(req, admin=True, model=name)
        body = await req.body(cfg.max_body_bytes, cfg.body_timeout_s, app.deadlines)
        if req.content_encoding:
            body = await inflate(body, req.content_encoding, cfg.max_body_bytes)
        doc = loads(body) if body.strip() else {}
        if not isinstance(doc, dict):
            raise InvalidInput("the request body must be a JSON object")
        if action == "index":
            ready = doc.get("ready", False)
            if not isinstance(ready, bool):
                raise InvalidInput("'ready' must be true or false")
            rows = await asyncio.to_thread(app.repository.index, ready)
            scope = app.tokens.scope(req.authorization)  # a scoped token sees only its own models
            return ok(rows if scope is None else [r for r in rows if r["name"] in scope])
        params = doc.get("parameters", {}) or {}
        if not isinstance(params, dict):
            raise InvalidInput("'parameters' must be an object")
        if not NAME_RE.fullmatch(name):
            raise NoRoute(f"unknown model {name!r}")
        if action == "unload":
            return await self._unload(name)
        return await self._load(name, params, ctx)

    async def _unload(self, name: str) -> Response:
        repo = self.app.repository
        self.app.unloaded.add(name)
        if not repo.unload(name) and name not in await asyncio.to_thread(repo.source.names):
            raise NoRoute(f"unknown model {name!r}")
        return ok({})

    async def _load(self, name: str, params: dict, ctx: list) -> Response:
        repo = self.app.repository
        if "config" in params or any(str(k).startswith("file:") for k in params):
            raise NotSupported(
                "loading with a config or file override is not supported: publish a registry "
                "version instead (aios publish ... --as MODEL)"
            )
        ref = params.get("version")
        if ref is not None:
            if not isinstance(ref, (str, int)) or isinstance(ref, bool) or str(ref) == "":
                raise InvalidInput("'version' must be a version number or an alias")
            ref = int(ref) if str(ref).isdecimal() else str(ref)
        if name not in await asyncio.to_thread(repo.source.names):
            raise NoRoute(f"unknown model {name!r}: the registry has no such model")
        if ref is not None:
            try:
                await asyncio.to_thread(repo.source.resolve, name, ref)
            except Exception as exc:  # no such version or alias
                raise NoRoute(f"cannot load {name!r}: {exc}") from None
        self.app.unloaded.discard(name)
        try:
            served = await asyncio.to_thread(repo.load, name, ref)
        except AiosError as exc:
            raise InvalidInput(f"cannot load {name!r}: {exc}") from None
        except Exception as exc:
            raise InvalidInput(f"cannot load {name!r}: {type(exc).__name__}: {exc}") from None
        ctx[1], ctx[2] = name, served.vstr
        return ok({"name": name, "version": served.vstr})
