"""What the sidebar shows, read through the public Python API only (no Jupyter imports here).

Each ``list_*`` function answers ``{"<kind>": [...]}``. Errors are :class:`~aios_lab.errors.AiosError`
subclasses, which the handlers map to HTTP status with :func:`~aios_lab.errors.http_status`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import charts
from ..data import datasets
from ..errors import NotFound
from ..jobs import devices, job, jobs
from ..registry import list_models as registry_models
from ..serve import endpoints

log = logging.getLogger("aios_lab.jupyter_ext")

SPARK_POINTS = 40
MAX_ROWS = 20_000  # metric rows held per job; past it the training rows are thinned (evaluations are kept)
MAX_CHARTED = 16  # jobs whose metric rows are held (the ones whose charts were asked for last)


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


# ---- jobs ------------------------------------------------------------------------------------


class _History:
    """What the views keep of one run of a job: its training losses (the list's sparkline) and, once its charts
    were asked for, its metric rows. Each poll reads only the rows after ``last``."""

    __slots__ = ("run", "last", "losses", "rows")

    def __init__(self, run: Any, rows: bool) -> None:
        self.run = run
        self.last: int | None = None
        self.losses: list[float] = []
        self.rows: list[dict[str, Any]] | None = [] if rows else None

    def add(self, fresh: list[dict[str, Any]]) -> None:
        if not fresh:
            return
        if self.last is None:
            fresh = _dedupe(fresh)
        self.last = max(self.last if self.last is not None else fresh[0]["step"], max(r["step"] for r in fresh))
        self.losses += [float(r["loss"]) for r in fresh if not r.get("split") and _number(r.get("loss")) is not None]
        if len(self.losses) > 50 * SPARK_POINTS:  # memory stays flat for very long jobs
            self.losses = charts.thin(self.losses, 10 * SPARK_POINTS)
        if self.rows is not None:
            rows = self.rows + fresh
            if len(rows) > MAX_ROWS:  # every evaluation stays, an even sample of the training rows
                keep = {id(r) for r in charts.thin([r for r in rows if not r.get("split")], MAX_ROWS // 2)}
                rows = [r for r in rows if r.get("split") or id(r) in keep]
            self.rows = rows


_history: dict[str, _History] = {}
_charted: list[str] = []  # the jobs whose rows are held, most recently charted last
_history_lock = threading.Lock()


def _run(info: dict[str, Any]) -> Any:
    """What identifies one run of a job: a resume starts a new one (and may go back to an earlier step)."""
    return info.get("created"), info.get("started")


def history(j: Any, run: Any, rows: bool = False) -> _History:
    """What is known of job ``j``'s current ``run``, brought up to date; ``rows`` also keeps its metric rows
    (for the charts; held for the :data:`MAX_CHARTED` most recently charted jobs)."""
    with _history_lock:
        held = _history.get(j.name)
        if held is None or held.run != run or (rows and held.rows is None):
            held = _history[j.name] = _History(run, rows)
        held.add(j.metrics(since_step=held.last))
        if rows:
            if j.name in _charted:
                _charted.remove(j.name)
            _charted.append(j.name)
            for name in _charted[:-MAX_CHARTED]:
                _charted.remove(name)
                if name in _history:
                    _history[name].rows = None
        return held


def _dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (split, step), the newest winning (a job resumed from an earlier checkpoint logs steps again)."""
    latest = {(r.get("split"), r["step"]): r for r in rows}
    return sorted(latest.values(), key=lambda r: r["step"])


def _forget_other_jobs(names: set[str]) -> None:
    with _history_lock:
        for gone in set(_history) - names:
            del _history[gone]
            if gone in _charted:
                _charted.remove(gone)


def spark(losses: list[float]) -> list[float]:
    """A job's training losses for the list's sparkline: at most :data:`SPARK_POINTS`, evenly thinned."""
    return charts.thin(losses, SPARK_POINTS)


def list_jobs() -> dict[str, Any]:
    out = []
    for j in jobs():
        model = jsonable(j.to_json())
        model["spark"] = spark(history(j, _run(model)).losses)
        out.append(model)
    _forget_other_jobs({j["name"] for j in out})
    return {"jobs": out}


def job_detail(name: str) -> dict[str, Any]:
    j = job(name)
    model = jsonable(j.to_json())
    model["checkpoints"] = jsonable(list(j.checkpoints()))
    return model


def job_metrics(name: str, since_step: int | None) -> dict[str, Any]:
    rows = jsonable(list(job(name).metrics(since_step=since_step)))
    last = max((r.get("step", 0) for r in rows), default=since_step)
    return {"name": name, "since_step": since_step, "last_step": last, "metrics": rows}


def job_charts(name: str) -> dict[str, Any]:
    """The job's charts as markup from :func:`aios_lab.charts.job_charts`, the drawing the widget shows too."""
    j = job(name)
    info = jsonable(j.to_json())
    rows = history(j, _run(info), rows=True).rows or []
    return {
        "name": name,
        "step": info["step"],
        "rows": len(rows),
        "html": charts.job_charts(rows, info.get("metric_names")),
    }


def job_log(name: str, tail: int) -> dict[str, Any]:
    """The log's last lines (``Job.log_tail`` refuses a log that is a symbolic link: 403)."""
    return {"name": name, "tail": tail, "log": job(name).log_tail(tail)}


def cancel_job(name: str) -> dict[str, Any]:
    job(name).cancel()
    return job_detail(name)


def resume_job(name: str, steps: int | None) -> dict[str, Any]:
    job(name).resume(steps=steps)
    return job_detail(name)


# ---- devices, models, endpoints, datasets -----------------------------------------------------


def list_devices() -> dict[str, Any]:
    """Accelerators (with the job holding each), the queue of jobs waiting for them, and the connected Ray
    cluster's nodes as last seen (``cluster``: None when none is connected; read from files only)."""
    found = jsonable(devices())
    return {"devices": found["devices"], "queue": found["queue"], "cluster": found.get("cluster")}


def list_models() -> dict[str, Any]:
    return {"models": jsonable(list(registry_models()))}


STALE_AFTER_S = 10.0  # a status older than this (or 5 of the server's intervals) means the server stopped publishing


def list_endpoints() -> dict[str, Any]:
    """Endpoints as the catalog has them, with the numbers each server publishes into its own row (its
    ``status``, refreshed every couple of seconds). Nothing here contacts an endpoint, so no credential is
    sent anywhere; a server that is alive is one whose process runs and whose status is fresh."""
    now = time.time()
    out = []
    for ep in endpoints():
        info = jsonable(ep)
        status = info.pop("status", None)
        info.update(endpoint_status(status if isinstance(status, dict) else {}, info.get("state"), now))
        out.append(info)
    return {"endpoints": out}


def endpoint_status(status: dict[str, Any], state: Any, now: float) -> dict[str, Any]:
    """What the sidebar shows from an endpoint's published status: readiness, request count and rate, errors,
    and the models whose last hot swap failed or that would not load."""
    published = _number(status.get("time"))
    interval = _number(status.get("interval_s")) or 0.0
    fresh = published is not None and now - published <= max(STALE_AFTER_S, 5 * interval)
    models = status.get("models") if isinstance(status.get("models"), dict) else {}
    swaps, loads, llm_models = [], [], []
    for name, m in sorted(models.items()):
        m = m if isinstance(m, dict) else {}
        if isinstance(m.get("swap_failure"), dict):
            swaps.append({**m["swap_failure"], "model": name})
        if m.get("load_failure"):
            loads.append({"model": name, "reason": str(m["load_failure"])})
        if isinstance(m.get("llm"), dict):
            llm_models.append({**m["llm"], "model": name})
    canaries = status.get("canaries") if isinstance(status.get("canaries"), dict) else {}
    return {
        "ready": state == "running" and bool(status.get("ready")) and fresh,
        "requests_total": _number(status.get("requests")),
        "requests_per_s": _number(status.get("requests_per_s")),
        "errors": _number(status.get("errors")),
        "rejected": _number(status.get("rejected")),
        "swap_failures": swaps,
        "load_failures": loads,
        "llm": status.get("llm") if isinstance(status.get("llm"), dict) else None,
        "llm_models": llm_models,
        "canaries": [{**c, "model": name} for name, c in sorted(canaries.items()) if isinstance(c, dict)],
    }


def _number(v: Any) -> float | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def list_datasets() -> dict[str, Any]:
    return {"datasets": jsonable(list(datasets()))}


# ---- sweeps and comparisons -------------------------------------------------------------------


def list_sweeps() -> dict[str, Any]:
    """Every sweep, oldest first, as ``Sweep.to_json(curves=False)`` (state, trial counts, best so far)."""
    from ..sweeps import sweeps

    out = []
    for sw in sweeps():
        try:
            out.append(jsonable(sw.to_json(curves=False)))
        except NotFound:  # deleted between the listing and the read
            continue
    return {"sweeps": out}


def sweep_detail(name: str) -> dict[str, Any]:
    """One sweep with its trials, curves and the chart the notebook's sweep widget draws (``html``)."""
    from ..sweeps import Sweep
    from ..sweeps.widget import chart

    info = jsonable(Sweep(name).to_json())
    return {**info, "html": chart(info)}


def compare_jobs(names: list[str]) -> dict[str, Any]:
    """``aios.compare(*names).to_json()`` plus its charts by step, drawn as the notebook draws them."""
    from ..compare import compare

    c = compare(*names)
    return {**jsonable(c.to_json()), "html": c.charts("step")}


def _section(fn: Callable[[], dict[str, Any]], kind: str) -> dict[str, Any]:
    """One section of the overview; a failing section reports its error instead of sinking the rest."""
    try:
        return fn()
    except Exception as exc:
        log.exception("aios sidebar: reading %s failed", kind)
        return {kind: [], "error": f"{type(exc).__name__}: {exc}"}


def overview() -> dict[str, Any]:
    """Everything the sidebar shows, in one answer (the poll target)."""
    return {
        "jobs": _section(list_jobs, "jobs"),
        "devices": _section(list_devices, "devices"),
        "models": _section(list_models, "models"),
        "endpoints": _section(list_endpoints, "endpoints"),
        "datasets": _section(list_datasets, "datasets"),
        "sweeps": _section(list_sweeps, "sweeps"),
    }
