"""The life of one server: start-up (load and warm the models), background work, drain and stop.

Background tasks, each cheap on the event loop (their blocking parts run in threads):

* every ``poll_interval_s``: follow moved aliases and new registry models (hot swap, with back-off);
* every 0.5 s: time out request bodies that are late (408);
* every second: flush the access log;
* every ``status_interval_s``: write the endpoint's catalog row (state, models, ``status`` JSON, see
  :func:`status_doc`) and when each token was last used.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import V2App
    from .control import EndpointRow

log = logging.getLogger("aios_lab.serve")

SWEEP_EVERY_S = 0.5


class Lifecycle:
    """Start-up, background tasks and shutdown of a :class:`V2App`.

    ``row``, when given, writes the endpoint's catalog row and audit entries (the server process passes
    one; in-process apps in tests do not)."""

    def __init__(self, app: V2App, row: EndpointRow | None = None):
        self.app = app
        self.row = row
        self.started = time.time()
        self._tasks: list[asyncio.Task] = []
        self._last: tuple[float, int, dict[str, int]] | None = None  # (time, total, per model) last published
        self._last_tokens: tuple[float, dict[str, int]] | None = None  # (time, tokens generated per model)
        self._status: dict | None = None

    # -- start and stop ---------------------------------------------------------------------------
    def load_models(self) -> None:
        """Load the models (compiling their buckets). Blocking; start-up runs it in a thread."""
        app = self.app
        names = list(app.settings.models) if app.settings.models is not None else app.repository.source.names()
        for name in names:
            ref: int | str | None = None
            if "@" in name:
                name, _, r = name.partition("@")
                ref = int(r) if r.isdecimal() else r
            try:
                app.repository.load(name, ref)
            except Exception as exc:
                if app.settings.models is not None:  # asked for by name: fail loudly
                    raise
                app.repository.load_failures[name] = str(exc)
                log.warning("not serving %s: %s", name, exc)

    async def startup(self) -> None:
        app, cfg = self.app, self.app.settings
        await asyncio.to_thread(self.load_models)
        await asyncio.to_thread(app.offload.start)
        gc.collect()
        gc.freeze()  # JAX's many long-lived objects would make every full collection ~30 ms
        loop = asyncio.get_running_loop()
        app.deadlines.loop = loop
        if cfg.poll_interval_s:
            self._tasks.append(loop.create_task(self._every(cfg.poll_interval_s, self.poll_once, threaded=True)))
        self._tasks.append(loop.create_task(self._every(SWEEP_EVERY_S, app.deadlines.sweep)))
        if app.access_log is not None:
            self._tasks.append(loop.create_task(self._every(1.0, app.access_log.flush)))
        app.ready = True
        if self.row is not None:
            await asyncio.to_thread(self.write_row, "running", self.status_doc())
            await asyncio.to_thread(self.row.audit, "serve.start", models=app.repository.summary())
            if cfg.status_interval_s:
                self._tasks.append(loop.create_task(self._every(cfg.status_interval_s, self._publish)))

    async def shutdown(self) -> None:
        app = self.app
        app.ready = False
        app.draining = True
        for t in self._tasks:
            t.cancel()
        for served in app.repository.loaded():  # requests in flight have had the drain period
            if served.engine is not None:
                await asyncio.to_thread(served.engine.stop)
        await asyncio.to_thread(app.offload.close)
        if app.access_log is not None:
            app.access_log.flush()
        if self.row is not None:
            await asyncio.to_thread(self.write_row, "stopped", self.status_doc())
            await asyncio.to_thread(self.row.audit, "serve.stop")

    async def lifespan(self, receive: Callable, send: Callable) -> None:
        """The ASGI lifespan protocol: start-up before the first request, shutdown after the last."""
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

    # -- background work --------------------------------------------------------------------------
    async def _every(self, seconds: float, fn: Callable[[], Any], threaded: bool = False) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                if threaded:
                    await asyncio.to_thread(fn)
                else:
                    result = fn()
                    if asyncio.iscoroutine(result):
                        await result
            except Exception as exc:  # keep going; the registry or the catalog may be mid-write
                log.warning("%s failed: %s", getattr(fn, "__name__", fn), exc)

    def poll_once(self) -> None:
        """Follow moved aliases and new versions; when serving everything, pick up newly published models."""
        app = self.app
        app.repository.refresh()
        if app.settings.models is None:
            for name in app.repository.source.names():
                if name not in app.repository.entries and name not in app.unloaded:
                    try:
                        app.repository.load(name)
                    except Exception as exc:
                        app.unloaded.add(name)  # do not retry a broken model every second
                        app.repository.load_failures[name] = str(exc)
                        log.warning("not serving new model %s: %s", name, exc)

    async def _publish(self) -> None:
        status = self.status_doc()
        self._last = (status["time"], status["requests"], {m: d["requests"] for m, d in status["models"].items()})
        self._last_tokens = (status["time"], self.app.llm_metrics.totals())
        self._status = status
        await asyncio.to_thread(self._write_status, status)

    def _write_status(self, status: dict) -> None:
        self.write_row("draining" if self.app.draining else "running", status)
        self.app.tokens.flush_last_used()

    def write_row(self, state: str, status: dict | None = None) -> None:
        """Write the endpoint's catalog row, with the last published status unless given (a busy catalog is
        logged; the next write catches up)."""
        if self.row is None:
            return
        if status is None:
            status = self._status or self.status_doc()
        try:
            self.row.write(state, self.app.repository.summary(), status)
        except Exception as exc:
            log.warning("could not record the endpoint: %s", exc)

    def status_doc(self) -> dict:
        """What readers of the catalog (the sidebar, ``aios endpoints``) need; documented in docs/architecture.md."""
        app, now = self.app, time.time()
        totals = app.metrics.totals()
        failures = app.repository.swap_failures()
        load_failures = dict(app.repository.load_failures)
        total = sum(v["requests"] for v in totals.values())
        previous = self._last
        rate = lambda now_n, before_n: round((now_n - before_n) / max(now - previous[0], 1e-3), 2) if previous else None
        zero = {"requests": 0, "errors": 0, "rejected": 0}
        llm, llm_overall = app.llm_metrics.status(now, self._last_tokens)
        models: dict[str, dict] = {}
        names = set(app.repository.entries) | set(failures) | set(load_failures) | {m for m in totals if m}
        for name in sorted(names):
            t = totals.get(name, zero)
            models[name] = {
                **t,
                "requests_per_s": rate(t["requests"], previous[2].get(name, 0)) if previous else None,
                "swap_failure": failures.get(name),
                "load_failure": load_failures.get(name) if name not in app.repository.entries else None,
                "llm": llm.get(name),
            }
        return {
            "time": now,
            "interval_s": app.settings.status_interval_s,
            "pid": os.getpid(),
            "started": self.started,
            "ready": app.ready and not app.draining,
            "requests": total,
            "errors": sum(v["errors"] for v in totals.values()),
            "rejected": sum(v["rejected"] for v in totals.values()),
            "requests_per_s": rate(total, previous[1]) if previous else None,
            "models": models,
            "llm": llm_overall,
            "canaries": app.canary.status(),
            "tf_serving_url": app.settings.tf_serving_url,
            "tls_cert": app.settings.tls_cert,
        }
