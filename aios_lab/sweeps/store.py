"""Sweep rows in the catalog: the ``sweeps`` table (settings, driver, state) and ``sweep_trials`` (one per
trial: its job, settings, metric). Readers (handle, widget, sidebar) read only these and the jobs' rows."""

from __future__ import annotations

import json
import time
from typing import Any

from .. import procs
from ..catalog import catalog

STATES = ("running", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")
DRIVER = "aios_lab.sweeps.driver"


def row(name: str) -> dict[str, Any] | None:
    r = catalog().one("SELECT * FROM sweeps WHERE name = ?", (name,))
    return _decode(r) if r else None


def rows() -> list[dict[str, Any]]:
    return [_decode(r) for r in catalog().query("SELECT * FROM sweeps ORDER BY created")]


def _decode(r) -> dict[str, Any]:
    d = dict(r)
    d["config"] = json.loads(d["config"])
    return d


def insert(name: str, cfg: dict[str, Any]) -> None:
    now = time.time()
    with catalog().tx() as db:
        db.execute(
            "INSERT INTO sweeps (name, state, config, created, updated) VALUES (?, 'running', ?, ?, ?)",
            (name, json.dumps(cfg), now, now),
        )


def update(name: str, where: dict[str, Any] | None = None, **fields: Any) -> bool:
    """Set columns of a sweep, only if the columns in ``where`` still hold; True if it changed."""
    fields["updated"] = time.time()
    sets = ", ".join(f"{k} = ?" for k in fields)
    conds = "".join(f" AND {k} = ?" for k in (where or {}))
    with catalog().tx() as db:
        n = db.execute(
            f"UPDATE sweeps SET {sets} WHERE name = ?{conds}", (*fields.values(), name, *(where or {}).values())
        ).rowcount
    return n > 0


def driver_alive(r: dict[str, Any]) -> bool:
    return procs.alive(r.get("pid"), DRIVER)


def trials(name: str) -> list[dict[str, Any]]:
    """The sweep's trials, by number, each with its job's state and step (``None`` if the job was deleted)."""
    found = catalog().query(
        "SELECT t.*, j.state AS job_state, j.step AS job_step, j.steps AS job_steps, j.n_devices AS n_devices "
        "FROM sweep_trials t LEFT JOIN jobs j ON j.name = t.job WHERE t.sweep = ? ORDER BY t.number",
        (name,),
    )
    out = []
    for r in found:
        d = dict(r)
        d["params"] = json.loads(d["params"])
        out.append(d)
    return out


def trial_of_job(job: str) -> dict[str, Any] | None:
    """The trial row a job belongs to, or None for a job that is not a sweep's trial."""
    r = catalog().one("SELECT * FROM sweep_trials WHERE job = ?", (job,))
    if r is None:
        return None
    d = dict(r)
    d["params"] = json.loads(d["params"])
    return d


def put_trial(name: str, number: int, job: str, params: dict[str, Any], state: str) -> None:
    with catalog().tx() as db:
        db.execute(
            "INSERT INTO sweep_trials (sweep, number, job, params, state, updated) VALUES (?,?,?,?,?,?)",
            (name, number, job, json.dumps(params), state, time.time()),
        )


def set_trial(name: str, number: int, **fields: Any) -> None:
    fields["updated"] = time.time()
    sets = ", ".join(f"{k} = ?" for k in fields)
    with catalog().tx() as db:
        db.execute(f"UPDATE sweep_trials SET {sets} WHERE sweep = ? AND number = ?", (*fields.values(), name, number))


__all__ = ["STATES", "TERMINAL", "row", "rows", "insert", "update", "driver_alive", "trials", "trial_of_job"]
