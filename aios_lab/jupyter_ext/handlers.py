"""Thin authenticated REST handlers under ``/aios/api/``: parse, call :mod:`.views`, serialise.

Reads answer with an ETag (a hash of the body) and ``304 Not Modified`` when the client's
``If-None-Match`` still matches, so an idle sidebar's poll costs a few header bytes. Writes are POSTs
and go through Jupyter's XSRF check (unless the request carries the server's token).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from ..errors import AiosError, http_status
from ..observability import render
from . import views

log = logging.getLogger("aios_lab.jupyter_ext")

NAME = r"(?P<name>[a-z0-9][a-z0-9._-]{0,63})"
JOB_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MAX_TAIL = 5000


class AiosHandler(APIHandler):
    """Common ground: run the (blocking, SQLite-reading) API off the event loop, answer JSON."""

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def reply(self, body: Any) -> None:
        data = json.dumps(body, sort_keys=True, separators=(",", ":"))
        self.set_header("Cache-Control", "no-cache")
        if self.request.method == "GET":
            self.set_header("Etag", '"' + hashlib.sha1(data.encode()).hexdigest() + '"')
            if self.check_etag_header():
                self.set_status(304)
                self.finish()
                return
        self.finish(data)

    def compute_etag(self) -> str | None:
        return None  # set explicitly in reply(); tornado's automatic one would hash the body again

    async def guarded(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn`` off the loop and reply. An :class:`AiosError` answers its :func:`http_status` (404 unknown
        job, 409 conflict, 400 invalid) with ``{"message", "error"}``; anything else is a bug: 500, logged."""
        try:
            body = await self.call(fn, *args)
        except AiosError as exc:
            self.set_status(http_status(exc))
            self.finish(json.dumps({"message": str(exc), "error": type(exc).__name__}))
            return
        except Exception:
            log.exception("aios sidebar API: %s %s failed", self.request.method, self.request.path)
            self.set_status(500)
            self.finish(json.dumps({"message": "the aios API failed; the Jupyter server's log has the traceback"}))
            return
        self.reply(body)

    def int_argument(self, name: str, default: int | None, low: int, high: int) -> int | None:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise tornado.web.HTTPError(400, f"{name} must be an integer") from None
        if not low <= value <= high:
            raise tornado.web.HTTPError(400, f"{name} must be between {low} and {high}")
        return value


class OverviewHandler(AiosHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.guarded(views.overview)


class ListHandler(AiosHandler):
    fn: Callable[[], dict[str, Any]]

    def initialize(self, fn: Callable[[], dict[str, Any]]) -> None:
        self.fn = fn

    @tornado.web.authenticated
    async def get(self) -> None:
        await self.guarded(self.fn)


class JobHandler(AiosHandler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        await self.guarded(views.job_detail, name)


class MetricsHandler(AiosHandler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        since = self.int_argument("since", None, -1, 2**62)
        await self.guarded(views.job_metrics, name, since)


class ChartsHandler(AiosHandler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        await self.guarded(views.job_charts, name)


class LogHandler(AiosHandler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        tail = self.int_argument("tail", 200, 1, MAX_TAIL)
        await self.guarded(views.job_log, name, tail)


class CancelHandler(AiosHandler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        await self.guarded(views.cancel_job, name)


class ResumeHandler(AiosHandler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        await self.guarded(views.resume_job, name, resume_steps(self.request.body))


class SweepHandler(AiosHandler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        await self.guarded(views.sweep_detail, name)


class CompareHandler(AiosHandler):
    """``GET /aios/api/compare?jobs=a,b,c``: the jobs side by side (``aios.compare``)."""

    @tornado.web.authenticated
    async def get(self) -> None:
        await self.guarded(views.compare_jobs, compare_names(self.get_query_argument("jobs", "")))


class PrometheusHandler(AiosHandler):
    """``GET /aios/api/metrics``: jobs, devices and the queue for a Prometheus server (text format, or
    OpenMetrics when the scraper's Accept asks for it). Scrapes do not count as user activity."""

    _track_activity = False

    @tornado.web.authenticated
    async def get(self) -> None:
        await self.guarded(render, self.request.headers.get("Accept"))

    def reply(self, body: tuple[bytes, str]) -> None:
        data, content_type = body
        self.set_header("Cache-Control", "no-cache")
        self.finish(data, set_content_type=content_type)


def resume_steps(body: bytes) -> int | float | None:
    """The ``steps`` of a resume request's body (``{}`` or ``{"steps": N}``) checked for JSON type; the bound
    is ``Job.resume``'s (``--steps``), so every face refuses the same numbers with the same words."""
    if not body.strip():
        return None
    try:
        data = json.loads(body)
    except ValueError:
        raise tornado.web.HTTPError(400, 'the body must be JSON, e.g. {"steps": 1000}') from None
    if not isinstance(data, dict) or set(data) - {"steps"}:
        raise tornado.web.HTTPError(400, 'the body must be a JSON object with at most "steps", e.g. {"steps": 1000}')
    steps = data.get("steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, float))):
        raise tornado.web.HTTPError(400, f"steps must be a whole number, not {json.dumps(steps)}")
    return steps


def compare_names(raw: str) -> list[str]:
    """The job names of ``?jobs=a,b,c``, each checked against the name rule (a bad one: 400, nothing read)."""
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if not names:
        raise tornado.web.HTTPError(400, "say which jobs to compare: ?jobs=JOB,JOB")
    for n in names:
        if not JOB_NAME.fullmatch(n):
            raise tornado.web.HTTPError(400, f"{n[:80]!r} is not a job name")
    return names


def routes(base_url: str) -> list[tuple]:
    from .chat import ChatHandler  # it builds on AiosHandler

    api = url_path_join(base_url, "aios", "api")
    return [
        (url_path_join(api, "overview"), OverviewHandler),
        (url_path_join(api, "jobs"), ListHandler, {"fn": views.list_jobs}),
        (url_path_join(api, "jobs", NAME), JobHandler),
        (url_path_join(api, "jobs", NAME, "metrics"), MetricsHandler),
        (url_path_join(api, "jobs", NAME, "charts"), ChartsHandler),
        (url_path_join(api, "jobs", NAME, "log"), LogHandler),
        (url_path_join(api, "jobs", NAME, "cancel"), CancelHandler),
        (url_path_join(api, "jobs", NAME, "resume"), ResumeHandler),
        (url_path_join(api, "devices"), ListHandler, {"fn": views.list_devices}),
        (url_path_join(api, "models"), ListHandler, {"fn": views.list_models}),
        (url_path_join(api, "endpoints"), ListHandler, {"fn": views.list_endpoints}),
        (url_path_join(api, "datasets"), ListHandler, {"fn": views.list_datasets}),
        (url_path_join(api, "sweeps"), ListHandler, {"fn": views.list_sweeps}),
        (url_path_join(api, "sweeps", NAME), SweepHandler),
        (url_path_join(api, "compare"), CompareHandler),
        (url_path_join(api, "metrics"), PrometheusHandler),
        (url_path_join(api, "chat"), ChatHandler),
    ]
