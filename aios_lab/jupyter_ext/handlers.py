"""Thin authenticated REST handlers under ``/aios/api/``: parse, call :mod:`.views`, serialise.

Reads answer with an ETag (a hash of the body) and ``304 Not Modified`` when the client's
``If-None-Match`` still matches, so an idle sidebar's poll costs a few header bytes. Writes are POSTs
and go through Jupyter's XSRF check (unless the request carries the server's token).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from . import views

NAME = r"(?P<name>[a-z0-9][a-z0-9._-]{0,63})"
MAX_TAIL = 5000


class AiosHandler(APIHandler):
    """Common ground: run the (blocking, SQLite-reading) API off the event loop, answer JSON."""

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def reply(self, body: Any, status: int = 200) -> None:
        data = json.dumps(body, sort_keys=True, separators=(",", ":"))
        self.set_status(status)
        self.set_header("Cache-Control", "no-cache")
        if status == 200 and self.request.method == "GET":
            self.set_header("Etag", '"' + hashlib.sha1(data.encode()).hexdigest() + '"')
            if self.check_etag_header():
                self.set_status(304)
                self.finish()
                return
        self.finish(data)

    def compute_etag(self) -> str | None:
        return None  # set explicitly in reply(); tornado's automatic one would hash the body again

    def fail(self, status: int, message: str, **extra: Any) -> None:
        self.set_status(status)
        self.finish(json.dumps({"message": message, **extra}))

    async def guarded(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn`` (a job route) and reply; a missing job is 404, an unavailable feature 404 with a
        reason, a refused action (AiosError) 409."""
        from ..errors import AiosError

        try:
            self.reply(await self.call(fn, *args))
        except views.Unavailable as exc:
            self.fail(404, str(exc), available=False)
        except LookupError as exc:
            self.fail(404, str(exc) or "no such job", missing="job")
        except AiosError as exc:
            self.fail(409, str(exc))

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
        self.reply(await self.call(views.overview))


class ListHandler(AiosHandler):
    fn: Callable[[], dict[str, Any]]

    def initialize(self, fn: Callable[[], dict[str, Any]]) -> None:
        self.fn = fn

    @tornado.web.authenticated
    async def get(self) -> None:
        self.reply(await self.call(self.fn))


class JobHandler(AiosHandler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        await self.guarded(views.job_detail, name)


class MetricsHandler(AiosHandler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        since = self.int_argument("since", None, -1, 2**62)
        await self.guarded(views.job_metrics, name, since)


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
        steps = None
        if self.request.body:
            try:
                body = json.loads(self.request.body)
            except ValueError:
                raise tornado.web.HTTPError(400, 'the body must be JSON, e.g. {"steps": 1000}') from None
            steps = body.get("steps") if isinstance(body, dict) else None
            if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
                raise tornado.web.HTTPError(400, "steps must be a positive integer")
        await self.guarded(views.resume_job, name, steps)


def routes(base_url: str) -> list[tuple]:
    api = url_path_join(base_url, "aios", "api")
    return [
        (url_path_join(api, "overview"), OverviewHandler),
        (url_path_join(api, "jobs"), ListHandler, {"fn": views.list_jobs}),
        (url_path_join(api, "jobs", NAME), JobHandler),
        (url_path_join(api, "jobs", NAME, "metrics"), MetricsHandler),
        (url_path_join(api, "jobs", NAME, "log"), LogHandler),
        (url_path_join(api, "jobs", NAME, "cancel"), CancelHandler),
        (url_path_join(api, "jobs", NAME, "resume"), ResumeHandler),
        (url_path_join(api, "devices"), ListHandler, {"fn": views.list_devices}),
        (url_path_join(api, "models"), ListHandler, {"fn": views.list_models}),
        (url_path_join(api, "endpoints"), ListHandler, {"fn": views.list_endpoints}),
        (url_path_join(api, "datasets"), ListHandler, {"fn": views.list_datasets}),
    ]
