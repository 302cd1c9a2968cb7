"""What the sidebar shows, read through the public Python API only (no Jupyter imports here).

Each ``list_*`` function answers ``{"<kind>": [...], "available": bool}``; a part of aios_lab that is
not installed yet (or not written yet) answers an empty list with ``available: false`` and a
``reason`` instead of failing, so the sidebar can say so.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("aios_lab.jupyter_ext")

SPARK_POINTS = 40


class Unavailable(Exception):
    """A feature whose module or function is not there (yet)."""


def api(module: str, attr: str) -> Callable[..., Any]:
    """``module.attr``, imported on first use; :class:`Unavailable` when it is not there."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable(f"{module} is not available ({exc})") from exc
    fn = getattr(mod, attr, None)
    if fn is None:
        raise Unavailable(f"{module}.{attr} is not available yet")
    return fn


def jsonable(value: Any) -> Any:
    """Plain JSON types from what the API returns (``to_json()``, dataclasses, numpy scalars, paths)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if hasattr(value, "to_json"):
        return jsonable(value.to_json())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        try:
            return jsonable(value.item())
        except Exception:  # pragma: no cover - odd array-likes
            pass
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    return str(value)


def _listing(kind: str, module: str, attr: str) -> dict[str, Any]:
    try:
        items = api(module, attr)()
    except Unavailable as exc:
        return {kind: [], "available": False, "reason": str(exc)}
    return {kind: jsonable(list(items)), "available": True}


# ---- jobs ------------------------------------------------------------------------------------


class _Losses:
    """The training losses of one job seen so far; each poll reads only the rows after ``last``."""

    __slots__ = ("losses", "last", "run")

    def __init__(self, run: Any = None) -> None:
        self.losses: list[float] = []
        self.last: int | None = None
        self.run = run


_losses: dict[str, _Losses] = {}
_losses_lock = threading.Lock()


def spark(job: Any, run: Any = None) -> list[float]:
    """The last training losses of a job (at most :data:`SPARK_POINTS`, evenly thinned), read incrementally."""
    with _losses_lock:
        held = _losses.get(job.name)
        if held is None or held.run != run:  # new, or started again (resumed from a checkpoint)
            held = _losses[job.name] = _Losses(run)
        try:
            rows = job.metrics(since_step=held.last)
        except Exception:  # a job deleted meanwhile
            rows = []
        for r in rows:
            if not r.get("split") and isinstance(r.get("loss"), (int, float)):
                held.losses.append(float(r["loss"]))
            if isinstance(r.get("step"), int):
                held.last = r["step"] if held.last is None else max(held.last, r["step"])
        if len(held.losses) > 50 * SPARK_POINTS:  # keep memory flat for very long jobs
            held.losses = downsample(held.losses, 10 * SPARK_POINTS)
        return downsample(held.losses, SPARK_POINTS)


def downsample(values: list[float], n: int) -> list[float]:
    """At most ``n`` evenly spaced values, always keeping the last one."""
    if len(values) <= n:
        return list(values)
    stride = (len(values) - 1) / (n - 1)
    return [values[round(i * stride)] for i in range(n)]


def list_jobs() -> dict[str, Any]:
    try:
        jobs = api("aios_lab.jobs", "jobs")()
    except Unavailable as exc:
        return {"jobs": [], "available": False, "reason": str(exc)}
    out = []
    for job in jobs:
        model = jsonable(job.to_json())
        model["spark"] = spark(job, (model.get("created"), model.get("started")))
        out.append(model)
    with _losses_lock:
        for gone in set(_losses) - {j["name"] for j in out}:
            del _losses[gone]
    return {"jobs": out, "available": True}


def get_job(name: str) -> Any:
    """The Job handle (:class:`LookupError` when there is no such job)."""
    from ..errors import AiosError

    job_fn = api("aios_lab.jobs", "job")
    try:
        return job_fn(name)
    except (AiosError, KeyError, LookupError) as exc:
        raise LookupError(str(exc) or f"no job named {name!r}") from exc


def job_detail(name: str) -> dict[str, Any]:
    job = get_job(name)
    model = jsonable(job.to_json())
    try:
        model["checkpoints"] = jsonable(list(job.checkpoints()))
    except Exception as exc:  # no checkpoint folder yet
        log.debug("checkpoints of %s: %s", name, exc)
        model["checkpoints"] = []
    return model


def job_metrics(name: str, since_step: int | None) -> dict[str, Any]:
    job = get_job(name)
    rows = jsonable(list(job.metrics(since_step=since_step)))
    last = max((r.get("step", 0) for r in rows), default=since_step)
    return {"name": name, "since_step": since_step, "last_step": last, "metrics": rows}


def job_log(name: str, tail: int) -> dict[str, Any]:
    job = get_job(name)
    return {"name": name, "tail": tail, "log": job.log_tail(tail) or ""}


def cancel_job(name: str) -> dict[str, Any]:
    job = get_job(name)
    job.cancel()
    return job_detail(name)


def resume_job(name: str, steps: int | None) -> dict[str, Any]:
    job = get_job(name)
    job.resume(steps=steps)
    return job_detail(name)


# ---- devices, models, endpoints, datasets -----------------------------------------------------


def list_devices() -> dict[str, Any]:
    """Accelerators (with the job holding each) and the queue of jobs waiting for them."""
    try:
        found = jsonable(api("aios_lab.jobs", "devices")())
    except Unavailable as exc:
        return {"devices": [], "queue": [], "available": False, "reason": str(exc)}
    return {"devices": found["devices"], "queue": found["queue"], "available": True}


def list_models() -> dict[str, Any]:
    return _listing("models", "aios_lab.registry", "list_models")


PROBE_EVERY_S = 2.0
_probes: dict[str, tuple[float, dict[str, Any]]] = {}
_request_counts: dict[str, tuple[float, float]] = {}
_probe_lock = threading.Lock()


def list_endpoints() -> dict[str, Any]:
    """Endpoints with their readiness (``/v2/health/ready``) and request rate (from ``/metrics``)."""
    listing = _listing("endpoints", "aios_lab.serve", "endpoints")
    for ep in listing["endpoints"]:
        if isinstance(ep, dict):
            ep.update(probe(ep))
    return listing


def probe(ep: dict[str, Any]) -> dict[str, Any]:
    """``{"ready": bool, "requests_per_s": float | None}`` of a live endpoint, re-read at most every 2 s."""
    url = ep.get("url")
    if not isinstance(url, str) or ep.get("state") not in ("running", "starting", "draining"):
        return {"ready": False, "requests_per_s": None}
    now = time.monotonic()
    with _probe_lock:
        held = _probes.get(url)
        if held and now - held[0] < PROBE_EVERY_S:
            return held[1]
    out = {"ready": _http_ok(url + "/v2/health/ready"), "requests_per_s": None}
    total = _request_total(url)
    with _probe_lock:
        if total is not None:
            before = _request_counts.get(url)
            if before and now > before[0] and total >= before[1]:
                out["requests_per_s"] = round((total - before[1]) / (now - before[0]), 1)
            _request_counts[url] = (now, total)
        _probes[url] = (now, out)
    return out


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


_SAMPLE = re.compile(r"^aios_serve_requests_total\{(?P<labels>[^}]*)\}\s+(?P<value>[0-9.eE+-]+)$", re.M)


def _request_total(url: str) -> float | None:
    """The endpoint's count of served requests (health checks and metric scrapes left out)."""
    try:
        token = api("aios_lab.serve.auth", "default_token")()
        req = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=0.5) as r:
            text = r.read(4_000_000).decode("utf-8", "replace")
    except Exception:  # not our kind of endpoint, no token, gone meanwhile
        return None
    total = 0.0
    for m in _SAMPLE.finditer(text):
        if 'route="health' in m["labels"] or 'route="metrics"' in m["labels"]:
            continue
        total += float(m["value"])
    return total


def list_datasets() -> dict[str, Any]:
    return _listing("datasets", "aios_lab.data", "datasets")


def _section(fn: Callable[[], dict[str, Any]], kind: str) -> dict[str, Any]:
    """One section of the overview; a failing section reports its error instead of sinking the rest."""
    try:
        return fn()
    except Exception as exc:
        log.exception("aios sidebar: reading %s failed", kind)
        return {kind: [], "available": True, "error": f"{type(exc).__name__}: {exc}"}


def overview() -> dict[str, Any]:
    """Everything the sidebar shows, in one answer (the poll target)."""
    return {
        "jobs": _section(list_jobs, "jobs"),
        "devices": _section(list_devices, "devices"),
        "models": _section(list_models, "models"),
        "endpoints": _section(list_endpoints, "endpoints"),
        "datasets": _section(list_datasets, "datasets"),
    }
