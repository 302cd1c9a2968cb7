"""Canaries: the unversioned route of a model split between the version it serves and a candidate version.

``%aios serve canary digits --version 3 --percent 10`` sends 10% of the infer requests on
``/v2/models/digits/infer`` (and TF Serving's ``/v1/models/digits:predict``) to v3, the rest to what the
route serves (``production``, say). Requests that name a version or an alias are never split. The split
is per request and deterministic for a given ``X-Request-ID`` header (a keyed hash of it, so raising the
percent keeps the requests already on the candidate there); requests without one are split at random.

Each arm counts its requests, errors (status >= 400) and latency: on ``/metrics``
(``aios_serve_canary_requests_total``, ``aios_serve_canary_errors_total``,
``aios_serve_canary_request_seconds``, ``aios_serve_canary_percent``) and in the endpoint's published
status, which ``promote --require "canary_error_rate<=0.01"`` reads. While a canary runs, the alias its
base follows cannot be promoted or rolled back. ``--end`` goes back to 100% in one assignment: requests
already on the candidate finish there, new ones go to the base, none fails.

>>> canary("digits", version=3, percent=10)     # start (or change the percent)
>>> canary("digits")                            # its state and numbers
>>> canary("digits", end=True)                  # back to 100%
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram

from ..errors import AiosError, Conflict, Forbidden, InvalidInput, NotFound, http_status
from ..names import NAME_RE, check_name
from .errors import MethodNotAllowed, NoRoute
from .http import Request, Response, ok
from .metrics import LATENCY_BUCKETS
from .protocol import loads

if TYPE_CHECKING:
    from .app import V2App
    from .repository import Served

HEADER = "X-Request-ID"
ARMS = ("canary", "base")


def check_percent(percent: Any) -> float:
    """A percent from 0 to 100 (a one-line InvalidInput otherwise)."""
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not math.isfinite(percent):
        raise InvalidInput(f"--percent must be a number from 0 to 100, got {percent!r}")
    if not 0 <= percent <= 100:
        raise InvalidInput(f"--percent must be from 0 to 100, got {percent:g}")
    return float(percent)


class Arm:
    """One side of a split: its counters here and its Prometheus children."""

    __slots__ = ("version", "requests", "errors", "seconds", "_req", "_err", "_lat", "_labels", "_metrics")

    def __init__(self, metrics: CanaryMetrics, model: str, version: int, arm: str):
        self.version, self.requests, self.errors, self.seconds = version, 0, 0, 0.0
        self._metrics, self._labels = metrics, None
        self._bind(model, arm)

    def _bind(self, model: str, arm: str) -> None:
        labels = (model, str(self.version), arm)
        if labels != self._labels:
            m = self._metrics
            self._req, self._err, self._lat = (
                m.requests.labels(*labels),
                m.errors.labels(*labels),
                m.latency.labels(*labels),
            )
            self._labels = labels

    def count(self, model: str, arm: str, version: int, status: int, seconds: float) -> None:
        if version != self.version:  # the base's alias moved (hot swap) while the canary ran
            self.version = version
            self._bind(model, arm)
        self.requests += 1
        self.seconds += seconds
        self._req.inc()
        self._lat.observe(seconds)
        if status >= 400:
            self.errors += 1
            self._err.inc()

    def to_json(self) -> dict:
        return {
            "version": self.version,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else None,
            "mean_ms": 1000 * self.seconds / self.requests if self.requests else None,
        }


class CanaryMetrics:
    """The canary families on the endpoint's own Prometheus registry."""

    def __init__(self, registry: Any):
        labels = ["model", "version", "arm"]
        self.requests = Counter(
            "aios_serve_canary_requests", "Infer requests of a canary split, by arm (canary|base)", labels,
            registry=registry,
        )  # fmt: skip
        self.errors = Counter(
            "aios_serve_canary_errors", "Canary-split requests answered with status >= 400, by arm", labels,
            registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "aios_serve_canary_request_seconds", "Latency of canary-split requests, by arm", labels,
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.percent = Gauge(
            "aios_serve_canary_percent", "Percent of the unversioned route sent to the candidate (0: ended)",
            ["model", "version"], registry=registry,
        )  # fmt: skip


class Canary:
    """A split of ``model``'s unversioned route: ``percent`` to ``served`` (the candidate), the rest to the base."""

    def __init__(self, metrics: CanaryMetrics, model: str, served: Served, percent: float, base: Any, base_v: int):
        self.model, self.served, self.version, self.percent = model, served, served.version, percent
        self.base = base  # what the unversioned route follows: an alias, None (the newest version) or a number
        self.started, self.ended = time.time(), None
        self.metrics = metrics
        self.arms = {
            "canary": Arm(metrics, model, served.version, "canary"),
            "base": Arm(metrics, model, base_v, "base"),
        }
        metrics.percent.labels(model, str(self.version)).set(percent)

    def set_percent(self, percent: float) -> None:
        self.percent = percent
        self.metrics.percent.labels(self.model, str(self.version)).set(percent)

    def end(self) -> None:
        self.ended = time.time()
        self.metrics.percent.labels(self.model, str(self.version)).set(0)

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "version": self.version,
            "percent": self.percent,
            "base": self.base,
            "state": "ended" if self.ended else "running",
            "started": self.started,
            "ended": self.ended,
            "header": HEADER,
            "arms": {arm: a.to_json() for arm, a in self.arms.items()},
        }


class Canaries:
    """The endpoint's canaries: the split on the hot path, the admin route, and the published status."""

    def __init__(self, app: V2App):
        self.app = app
        self.metrics = CanaryMetrics(app.metrics.registry)
        self.active: dict[str, Canary] = {}  # running ones; replaced whole, never changed in place
        self.records: dict[str, Canary] = {}  # the latest per model, running or ended (its numbers stay)

    # -- the hot path ------------------------------------------------------------------------------
    def pick(self, name: str, base: Served, req: Request) -> tuple[Served, Canary | None, str]:
        """The version this unversioned request goes to: (served, its canary or None, arm)."""
        c = self.active.get(name)
        if c is None:
            return base, None, ""
        rid = req.request_id
        if rid:
            digest = hashlib.blake2b(rid, digest_size=8, key=name.encode()[:64]).digest()
            point = int.from_bytes(digest, "big") * (100 / 2**64)
        else:
            point = random.random() * 100
        if point < c.percent:
            return c.served, c, "canary"
        return base, c, "base"

    async def observe(self, coro: Awaitable[Response], c: Canary, arm: str, served: Served, t0: float) -> Response:
        """Await a split request's response and count it on its arm (status, latency)."""
        status = 499
        try:
            resp = await coro
            status = resp.status
            return resp
        except Exception as exc:
            status = http_status(exc)
            raise
        finally:
            c.arms[arm].count(c.model, arm, served.version, status, time.perf_counter() - t0)

    # -- the admin route ---------------------------------------------------------------------------
    async def handle(self, req: Request, ctx: list, name: str) -> Response:
        """``GET|POST /v2/repository/models/M/canary`` (admin): the state, or ``{"version", "percent"}`` to
        start or change one, ``{"end": true}`` to end it."""
        app, cfg = self.app, self.app.settings
        ctx[0] = "canary"
        if not NAME_RE.fullmatch(name):
            raise NoRoute(f"no route {req.path}: see /openapi.json")
        if req.method not in ("GET", "POST"):
            raise MethodNotAllowed("GET, POST")
        app.router.auth(req, admin=True)
        app.tokens.check_model(req.authorization, name)
        if req.method == "GET":
            c = self.records.get(name)
            if c is None:
                raise NoRoute(f"model {name!r} has had no canary on this endpoint")
            return ok(c.to_json())
        body = await req.body(cfg.max_body_bytes, cfg.body_timeout_s, app.deadlines)
        doc = loads(body) if body.strip() else {}
        if not isinstance(doc, dict) or set(doc) - {"version", "percent", "end"}:
            raise InvalidInput('the body is {"version": V, "percent": P} to start a canary, or {"end": true}')
        if doc.get("end"):
            if "version" in doc or "percent" in doc:
                raise InvalidInput('end a canary with {"end": true} alone; it takes no version or percent')
            c = self.end(name)
        else:
            c = await self.start(name, doc.get("version"), doc.get("percent"))
        ctx[1], ctx[2] = name, str(c.version)
        await asyncio.to_thread(self._publish)
        return ok(c.to_json())

    async def start(self, name: str, ref: Any, percent: Any) -> Canary:
        """Split ``name`` between what it serves and version ``ref`` (loaded and warmed first), ``percent`` to it."""
        running = self.active.get(name)
        if ref is None and running is None:
            raise InvalidInput(f"no canary runs for {name!r}: give the candidate's version (--version V)")
        if percent is None:
            percent = running.percent if running is not None else 10
        percent = check_percent(percent)
        repo = self.app.repository
        if name not in repo.entries:
            raise NoRoute(f"model {name!r} is not served by this endpoint")
        base = repo.route(name, None)
        if base.engine is not None:
            raise InvalidInput(f"model {name!r} is a language model: canaries split infer requests of other models")
        if ref is not None:
            if isinstance(ref, bool) or not isinstance(ref, (int, str)) or str(ref) == "":
                raise InvalidInput("'version' must be a version number or an alias")
            ref = int(ref) if str(ref).isdecimal() else str(ref)
            try:
                version = await asyncio.to_thread(repo.source.resolve, name, ref)
            except AiosError as exc:
                raise NoRoute(f"no candidate {name}@{ref}: {exc}") from None
        else:
            version = running.version
        if version == base.version:
            raise InvalidInput(f"v{version} already serves {name}'s unversioned route; give another --version")
        if running is not None and running.version == version:
            running.set_percent(percent)  # a plain float assignment: the next request sees it
            return running
        served = repo.entries[name].versions.get(version) or await asyncio.to_thread(repo.load, name, version)
        if served.engine is not None:
            raise InvalidInput(f"{name} v{version} is a language model: canaries split infer requests of other models")
        c = Canary(self.metrics, name, served, percent, repo.entries[name].follow, base.version)
        if running is not None:
            running.end()
        self.records[name] = c
        self.active = {**self.active, name: c}
        return c

    def end(self, name: str) -> Canary:
        """Back to 100% on the base, in one assignment."""
        c = self.active.get(name)
        if c is None:
            raise NoRoute(f"no canary runs for model {name!r} on this endpoint")
        self.active = {k: v for k, v in self.active.items() if k != name}
        c.end()
        return c

    def status(self) -> dict[str, dict]:
        """model -> its latest canary (for the endpoint's published status)."""
        return {name: c.to_json() for name, c in sorted(self.records.items())}

    def _publish(self) -> None:
        """Write the endpoint's row now, so ``promote``'s guard and ``aios endpoints`` see the change at once."""
        life = self.app.lifecycle
        if life.row is not None:
            life.write_row("draining" if self.app.draining else "running", life.status_doc())


# -- the client side: the verb, promote's metrics and guard -------------------------------------------------


def _live(ep: Any) -> bool:
    return ep.state in ("running", "draining")


def _endpoint_for(model: str, port: int | None) -> Any:
    from .control import endpoints

    live = [e for e in endpoints() if _live(e) and e.kind == "local" and (port is None or e.port == port)]
    serving = [e for e in live if model in e.models]
    if not serving:
        where = f" on port {port}" if port is not None else ""
        raise NotFound(f"no running endpoint{where} serves {model!r}; start one with `%aios serve`")
    if len(serving) > 1:
        ports = ", ".join(str(e.port) for e in serving)
        raise InvalidInput(f"several endpoints serve {model!r} (ports {ports}): say which with --port")
    return serving[0]


def _call(ep: Any, model: str, doc: dict | None) -> dict:
    """The endpoint's canary route, with the default admin token; its errors come back as AiosErrors."""
    from .auth import default_token
    from .tls import pinned_context

    url = f"{ep.url}/v2/repository/models/{model}/canary"
    data = None if doc is None else json.dumps(doc).encode()
    headers = {"Authorization": f"Bearer {default_token()}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method="GET" if doc is None else "POST", headers=headers)
    cert = (ep.status or {}).get("tls_cert")
    context = pinned_context(cert) if url.startswith("https://") and cert else None
    try:
        with urllib.request.urlopen(request, timeout=600, context=context) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error") or str(exc)
        except ValueError:
            message = str(exc)
        cls = {404: NotFound, 409: Conflict, 403: Forbidden}.get(exc.code, InvalidInput)
        raise cls(message) from None
    except (urllib.error.URLError, OSError) as exc:
        raise Conflict(f"cannot reach the endpoint {ep.url}: {exc}") from None


def canary(
    model: str,
    version: int | str | None = None,
    percent: float | None = None,
    *,
    end: bool = False,
    port: int | None = None,
) -> dict:
    """Start, change, show or end the canary of ``model`` on the running endpoint that serves it (``port``
    when several do): ``version`` (a number or an alias) gets ``percent`` (default 10) of the unversioned
    route; ``end=True`` goes back to 100%. Returns the canary's state and per-arm numbers."""
    check_name(model, "model")
    if end and (version is not None or percent is not None):
        raise InvalidInput("--end takes no --version or --percent: it sends 100% back to the base")
    if percent is not None:
        check_percent(percent)
    ep = _endpoint_for(model, port)
    if end:
        doc: dict | None = {"end": True}
    elif version is None and percent is None:
        doc = None
    else:
        doc = {k: v for k, v in (("version", version), ("percent", percent)) if v is not None}
    out = _call(ep, model, doc)
    out["endpoint"] = ep.url
    return out


def _records(model: str, version: int) -> list[dict]:
    from .control import endpoints

    out = []
    for ep in endpoints():
        c = ((ep.status or {}).get("canaries") or {}).get(model)
        if c and int(c["version"]) == int(version):
            out.append(c)
    return out


def _numbers(model: str, version: int) -> tuple[int, int]:
    found = _records(model, version)
    if not found:
        raise InvalidInput(
            f"no canary of {model} v{version} has run on an endpoint: start one with "
            f"`%aios serve canary {model} --version {version} --percent 10`, then promote"
        )
    arms = [c["arms"]["canary"] for c in found]
    return sum(a["requests"] for a in arms), sum(a["errors"] for a in arms)


def error_rate(model: str, version: int) -> float | None:
    """``canary_error_rate``: errors / requests of ``version`` as a canary, from the endpoints' published status
    (None when it got no request)."""
    requests, errors = _numbers(model, version)
    return errors / requests if requests else None


def requests_served(model: str, version: int) -> float | None:
    """``canary_requests``: how many requests ``version`` answered as a canary."""
    return float(_numbers(model, version)[0])


def guard(model: str, alias: str, action: str) -> str | None:
    """Refuse moving an alias that a running canary splits against (promote's and rollback's guard)."""
    from .control import endpoints

    for ep in endpoints():
        c = ((ep.status or {}).get("canaries") or {}).get(model)
        if _live(ep) and c and c["state"] == "running" and c["base"] == alias:
            return (
                f"{model}@{alias} is the base of a running canary on {ep.url} (v{c['version']} gets "
                f"{c['percent']:g}%): end it first with `%aios serve canary {model} --end`, then {action}"
            )
    return None


__all__ = ["canary", "Canaries", "check_percent", "error_rate", "requests_served", "guard", "HEADER"]
