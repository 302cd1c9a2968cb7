"""Job rows in the catalog: read, write, and notice workers that died."""

from __future__ import annotations

import json
import time
from typing import Any

from .. import procs
from ..catalog import catalog

TERMINAL = ("succeeded", "failed", "cancelled", "pruned")  # pruned: a sweep trial stopped early (checkpointed)
STATES = ("queued", "running", "interrupted", *TERMINAL)


def row(name: str) -> dict[str, Any] | None:
    r = catalog().one("SELECT * FROM jobs WHERE name = ?", (name,))
    return decode(r) if r else None


def rows(states: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    if states:
        marks = ",".join("?" * len(states))
        found = catalog().query(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created", states)
    else:
        found = catalog().query("SELECT * FROM jobs ORDER BY created")
    return [decode(r) for r in found]


def decode(r) -> dict[str, Any]:
    """A catalog row as a dict, with ``config`` and ``devices`` parsed from JSON."""
    d = dict(r)
    d["config"] = json.loads(d["config"])
    d["devices"] = json.loads(d["devices"]) if d["devices"] else []
    return d


def update(name: str, where: dict[str, Any] | None = None, **fields: Any) -> bool:
    """Set columns of one job, only if the columns in ``where`` still hold; True if it changed.

    ``devices``, ``config`` and ``info`` are JSON-encoded here.
    """
    for key in ("devices", "config", "info"):
        if key in fields and not isinstance(fields[key], str) and fields[key] is not None:
            fields[key] = json.dumps(fields[key])
    fields["updated"] = time.time()
    sets = ", ".join(f"{k} = ?" for k in fields)
    conds = "".join(f" AND {k} = ?" for k in (where or {}))
    with catalog().tx() as db:
        n = db.execute(
            f"UPDATE jobs SET {sets} WHERE name = ?{conds}", (*fields.values(), name, *(where or {}).values())
        ).rowcount
    return n > 0


def alive(pid: int | None) -> bool:
    """True if ``pid`` is a live aios_lab job process."""
    return procs.alive(pid, "aios_lab.jobs")


LAUNCH_GRACE_S = 60.0  # a job just handed its devices may not have a process yet


def reap() -> list[str]:
    """Mark running jobs whose processes are all gone as interrupted; returns their names.

    A worker killed with SIGKILL, by the OOM killer or a reboot cannot say so itself, and its
    supervisor may be gone too; whoever reads the catalog next notices.
    """
    now, lost = time.time(), []
    for j in rows(("running",)):
        if alive(j["supervisor_pid"]) or alive(j["pid"]):
            continue
        if not j["supervisor_pid"] and not j["pid"] and now - (j["updated"] or 0) < LAUNCH_GRACE_S:
            continue
        with catalog().tx() as db:  # only if nobody changed it meanwhile
            n = db.execute(
                "UPDATE jobs SET state='interrupted', pid=NULL, supervisor_pid=NULL, updated=? "
                "WHERE name=? AND state='running' AND updated=?",
                (now, j["name"], j["updated"]),
            ).rowcount
        if n:
            lost.append(j["name"])
    return lost
