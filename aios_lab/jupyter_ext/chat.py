"""``POST /aios/api/chat``: the sidebar's Chat panel, streamed from a serving endpoint through this extension.

The browser never holds an endpoint credential. The extension picks the endpoint from the catalog (the one the
body names by URL, else the first running one whose published status lists the model as a language model),
refuses plain HTTP to a host other than loopback, and calls ``/v1/chat/completions`` with an **infer** token
scoped to that one model: minted on first use (``label="jupyter chat"``), kept in this process's memory only
(the catalog stores its hash, as for every token) and replaced shortly before it expires or when the endpoint
no longer accepts it. The endpoint's server-sent events go through to the browser as they come; when the
browser goes away the upstream request is closed, so the endpoint frees the sequence's KV slot.

Body: ``{"model": "NAME[:VERSION|:ALIAS]", "messages": [{"role", "content"}, ...], "max_tokens"?,
"temperature"?, "top_p"?, "seed"?, "endpoint"?: URL}``. Errors before the stream answer ``{"message", "error"}``
with their status (400 bad body, 403 plain HTTP off loopback, 404 unknown model or endpoint, 409 no endpoint
serves it, the endpoint's own 400/404/429, 502 endpoint unreachable); an error after the stream started is a
``data: {"error": {"message": ...}}`` event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import tornado.web
from tornado.iostream import StreamClosedError

from .. import config
from ..errors import AiosError, Conflict, Forbidden, InvalidInput, NotFound, http_status
from ..serve.tls import is_loopback
from .handlers import AiosHandler
from .views import endpoint_status

log = logging.getLogger("aios_lab.jupyter_ext")

ROUTE = "/v1/chat/completions"
EVENT_STREAM = "text/event-stream; charset=utf-8"
MODEL_REF = re.compile(r"(?P<name>[a-z0-9][a-z0-9._-]{0,63})(?::(?P<ref>[a-z0-9][a-z0-9._-]{0,63}))?")
ROLES = ("system", "user", "assistant")
FIELDS = ("model", "messages", "max_tokens", "temperature", "top_p", "seed", "endpoint")
MAX_MESSAGES = 512
MAX_CHARS = 512 * 1024  # the whole conversation's text
MAX_TOKENS = 1 << 20
MAX_SEED = 2**63 - 1
TOKEN_LIFETIME_S = 12 * 3600
RENEW_BEFORE_S = 15 * 60  # a cached token with less left than this is replaced
TOKEN_LABEL = "jupyter chat"
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 600.0  # between two events of one reply (a long queue at the endpoint)


# ---- the request body --------------------------------------------------------------------------


@dataclass
class ChatRequest:
    model: str  # as given: NAME, NAME:VERSION or NAME:ALIAS
    name: str  # the model's name (what the token is scoped to)
    messages: list[dict[str, str]]
    sampling: dict[str, Any] = field(default_factory=dict)
    endpoint: str | None = None

    def upstream_body(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": self.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **self.sampling,
        }


def _number(value: Any, key: str, low: float, high: float, whole: bool = False) -> float | int:
    kind = "a whole number" if whole else "a number"
    ok = isinstance(value, int) if whole else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not math.isfinite(value) or not low <= value <= high:
        raise InvalidInput(f"{key} must be {kind} from {low:g} to {high:g}, not {json.dumps(value)[:40]}")
    return value


def parse_body(raw: bytes) -> ChatRequest:
    """The checked body of a chat request; :class:`InvalidInput` (400, one line) for anything else."""
    try:
        doc = json.loads(raw or b"")
    except ValueError:
        example = '{"model": "NAME", "messages": [{"role": "user", "content": "..."}]}'
        raise InvalidInput(f"the body must be JSON: {example}") from None
    if not isinstance(doc, dict):
        raise InvalidInput('the body must be a JSON object with "model" and "messages"')
    unknown = sorted(set(doc) - set(FIELDS))
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0][:40]!r}: the fields are {', '.join(FIELDS)}")
    model = doc.get("model")
    m = MODEL_REF.fullmatch(model) if isinstance(model, str) else None
    if m is None or ".." in model:
        given = json.dumps(model)[:80]
        raise InvalidInput(f"model must be NAME, NAME:VERSION or NAME:ALIAS (e.g. chat or chat:2), not {given}")
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages or len(messages) > MAX_MESSAGES:
        raise InvalidInput(f'messages must be a list of 1 to {MAX_MESSAGES} {{"role", "content"}} objects')
    chars = 0
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or set(msg) != {"role", "content"}:
            raise InvalidInput(f'messages[{i}] must be an object with exactly "role" and "content"')
        if msg["role"] not in ROLES:
            raise InvalidInput(f"messages[{i}].role must be one of {', '.join(ROLES)}")
        if not isinstance(msg["content"], str):
            raise InvalidInput(f"messages[{i}].content must be a string")
        chars += len(msg["content"])
    if chars > MAX_CHARS:
        raise InvalidInput(f"the conversation is {chars} characters long; the limit is {MAX_CHARS}: start a new chat")
    if messages[-1]["role"] == "assistant":
        raise InvalidInput("the last message must be the user's (or the system's), not the assistant's")
    sampling: dict[str, Any] = {}
    for key, low, high, whole in (
        ("max_tokens", 1, MAX_TOKENS, True),
        ("temperature", 0.0, 2.0, False),
        ("top_p", 0.0, 1.0, False),
        ("seed", 0, MAX_SEED, True),
    ):
        if doc.get(key) is not None:
            sampling[key] = _number(doc[key], key, low, high, whole)
    if sampling.get("top_p") == 0:
        raise InvalidInput("top_p must be more than 0 (1 keeps every token)")
    endpoint = doc.get("endpoint")
    if endpoint is not None and (not isinstance(endpoint, str) or not 0 < len(endpoint) <= 500):
        raise InvalidInput("endpoint must be an endpoint's URL as `%aios endpoints` lists it")
    return ChatRequest(model, m["name"], messages, sampling, endpoint or None)


# ---- which endpoint ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    url: str
    cert: str | None  # the endpoint's own certificate, for HTTPS (pinned, as serve() checks readiness)


def check_transport(url: str) -> None:
    """Refuse (403) to send a credential over plain HTTP to a host other than loopback."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme != "http" or not parts.hostname:
        raise Forbidden(f"the endpoint's URL {url!r} is neither http:// nor https://; restart it with `%aios serve`")
    if not is_loopback(parts.hostname):
        raise Forbidden(
            f"{url} serves plain HTTP off this machine: the chat token would travel unencrypted; "
            "serve it with --tls-cert/--tls-key (HTTPS) or on 127.0.0.1"
        )


def choose_endpoint(req: ChatRequest) -> Target:
    """The endpoint for ``req`` from the catalog (blocking: reads SQLite). Nothing is contacted here."""
    from ..registry import list_models
    from ..serve import endpoints

    if not list_models(req.name):
        raise NotFound(f"no model {req.name!r} in the registry; `%aios models` lists them")
    fix = f"`%aios serve --models {req.name}` serves it"
    now = time.time()
    rows = endpoints()
    if req.endpoint is not None:
        rows = [e for e in rows if e.url == req.endpoint.rstrip("/")]
        if not rows:
            raise NotFound(f"no endpoint {req.endpoint[:200]!r} in the catalog; `%aios endpoints` lists them")
        ep = rows[0]
        if ep.state != "running" or not ep.alive():
            raise Conflict(f"the endpoint {ep.url} is {ep.state if ep.state != 'running' else 'not running'}; {fix}")
        if req.name not in _lm_models(ep, now):
            raise Conflict(f"the endpoint {ep.url} does not serve {req.name!r} as a language model; {fix}")
    else:
        live = [e for e in rows if e.state == "running" and e.alive() and req.name in _lm_models(e, now)]
        if not live:
            raise Conflict(f"no running endpoint serves {req.name!r} as a language model; {fix}")
        ep = live[0]
    check_transport(ep.url)
    cert = (ep.status or {}).get("tls_cert")
    return Target(ep.url.rstrip("/"), cert if isinstance(cert, str) and cert else None)


def _lm_models(ep: Any, now: float) -> set[str]:
    status = ep.status if isinstance(ep.status, dict) else {}
    return {m["model"] for m in endpoint_status(status, ep.state, now)["llm_models"]}


# ---- the credential ----------------------------------------------------------------------------


class Credentials:
    """Infer tokens scoped to one model each, minted on first use and held in this process's memory only."""

    def __init__(self, lifetime_s: float = TOKEN_LIFETIME_S, renew_before_s: float = RENEW_BEFORE_S) -> None:
        self.lifetime_s, self.renew_before_s = lifetime_s, renew_before_s
        self._held: dict[tuple[str, str], tuple[str, float]] = {}  # (AIOS_HOME, model) -> (token, expires)
        self._lock = asyncio.Lock()

    async def token(self, model: str) -> str:
        key = (str(config.home()), model)
        async with self._lock:
            held = self._held.get(key)
            if held is None or held[1] - time.time() < self.renew_before_s:
                expires = time.time() + self.lifetime_s
                token = await asyncio.get_running_loop().run_in_executor(None, self._mint, model)
                held = self._held[key] = (token, expires)
            return held[0]

    def forget(self, model: str, token: str) -> None:
        """Drop ``token`` (the endpoint refused it: revoked by hand); the next call mints another."""
        key = (str(config.home()), model)
        if self._held.get(key, (None,))[0] == token:
            del self._held[key]

    def _mint(self, model: str) -> str:
        from ..serve.auth import create_token

        return create_token("infer", expires=self.lifetime_s, label=TOKEN_LABEL, models=[model])


credentials = Credentials()


# ---- the handler -------------------------------------------------------------------------------


class UpstreamError(AiosError):
    """The endpoint answered an error before streaming: its status and its one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def upstream_error(status: int, body: bytes, url: str) -> UpstreamError:
    try:
        err = json.loads(body).get("error")
        message = err.get("message") if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        message = body[:200].decode("utf-8", "replace").strip()
    message = " ".join(str(message or "").split())[:500]
    if status == 429:
        return UpstreamError(429, f"the endpoint is busy ({message}); try again in a moment")
    if status in (401, 403):  # our own credential was refused: nothing the browser can fix by itself
        return UpstreamError(502, f"the endpoint {url} refused the chat token ({message}); try again")
    if 400 <= status < 500:
        return UpstreamError(status, f"the endpoint answered {status}: {message}")
    return UpstreamError(502, f"the endpoint {url} failed ({status}: {message}); its log is under AIOS_HOME/serve/")


def _error_event(message: str) -> bytes:
    return b"data: " + json.dumps({"error": {"message": message}}).encode() + b"\n\n"


class ChatHandler(AiosHandler):
    """``POST /aios/api/chat``: check, pick the endpoint, stream its reply through (see the module's doc)."""

    _task: asyncio.Future | None = None

    @tornado.web.authenticated
    async def post(self) -> None:
        self._task = asyncio.ensure_future(self._chat())
        try:
            await self._task
        except asyncio.CancelledError:  # the browser went away: the upstream request is closed by now
            pass

    def on_connection_close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        super().on_connection_close()

    def fail(self, exc: AiosError, status: int | None = None) -> None:
        """The sidebar's ``{"message", "error"}`` with the error's status (``http_status``, or the endpoint's)."""
        self.set_status(status or (exc.status if isinstance(exc, UpstreamError) else http_status(exc)))
        error = "EndpointError" if isinstance(exc, UpstreamError) else type(exc).__name__
        self.finish(json.dumps({"message": str(exc), "error": error}))

    async def _chat(self) -> None:
        try:
            req = parse_body(self.request.body)
            target = await self.call(choose_endpoint, req)
        except AiosError as exc:
            self.fail(exc)
            return
        except Exception:
            log.exception("aios chat: choosing an endpoint failed")
            self.fail(AiosError("the aios API failed; the Jupyter server's log has the traceback"), 500)
            return
        try:
            await self._stream(req, target)
        except AiosError as exc:
            self.fail(exc)
        except StreamClosedError:  # the browser went away while we wrote
            pass
        except Exception:
            log.exception("aios chat: streaming from %s failed", target.url)
            message = "the chat failed; the Jupyter server's log has the traceback"
            if self._headers_written:
                self.finish(_error_event(message), set_content_type=EVENT_STREAM)
            else:
                self.fail(AiosError(message), 500)

    async def _stream(self, req: ChatRequest, target: Target) -> None:
        import httpx

        verify: Any = True
        if target.url.startswith("https://") and target.cert:
            from ..serve.tls import pinned_context

            verify = pinned_context(target.cert)
        timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        body = req.upstream_body()
        async with httpx.AsyncClient(timeout=timeout, verify=verify, trust_env=False) as client:
            for attempt in range(2):
                token = await credentials.token(req.name)
                headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
                try:
                    async with client.stream("POST", target.url + ROUTE, json=body, headers=headers) as r:
                        if r.status_code == 401 and attempt == 0:  # revoked or expired: mint another, once
                            credentials.forget(req.name, token)
                            continue
                        if r.status_code != 200:
                            raise upstream_error(r.status_code, await r.aread(), target.url)
                        await self._relay(r, target)
                        return
                except httpx.HTTPError as exc:
                    if self._headers_written:
                        why = f"the endpoint stopped answering ({type(exc).__name__}); send again to retry"
                        self.finish(_error_event(why), set_content_type=EVENT_STREAM)
                        return
                    why = f"could not reach {target.url} ({type(exc).__name__})"
                    raise UpstreamError(502, f"{why}; `%aios serve --models {req.name}` starts it") from None

    async def _relay(self, r: Any, target: Target) -> None:
        self.set_status(200)
        self.set_header("Content-Type", EVENT_STREAM)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        self.set_header("X-Aios-Endpoint", target.url)
        await self.flush()  # the headers: the browser knows the stream started
        async for chunk in r.aiter_raw():
            if chunk:
                self.write(chunk)
                await self.flush()  # StreamClosedError when the browser went away: leaves the upstream stream
        self.finish(set_content_type=EVENT_STREAM)


__all__ = ["ChatHandler", "ChatRequest", "Credentials", "check_transport", "choose_endpoint", "parse_body"]
