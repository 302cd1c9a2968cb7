"""The audit log: who published, loaded, deleted or moved what, and when (every area writes it, anyone reads it)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from ..render import Table
from .db import catalog


def audit_rows(limit: int | None = 50, action: str | None = None, obj: str | None = None) -> list[dict[str, Any]]:
    """The newest audit rows, oldest first."""
    q, args = "SELECT * FROM audit", []
    cond = []
    if action:
        cond.append("action=?")
        args.append(action)
    if obj:
        cond.append("object LIKE ?")
        args.append(f"{obj}%")
    if cond:
        q += " WHERE " + " AND ".join(cond)
    q += " ORDER BY id DESC"
    if limit:
        q += f" LIMIT {int(limit)}"
    rows = [dict(r) for r in catalog().query(q, tuple(args))]
    for r in rows:
        r["details"] = json.loads(r["details"])
    return rows[::-1]


def audit_table(limit: int | None = 50, action: str | None = None, obj: str | None = None) -> Table:
    rows = [
        [
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["time"])),
            r["user"],
            r["action"],
            r["object"],
            " ".join(f"{k}={_short(v)}" for k, v in r["details"].items() if v is not None),
        ]
        for r in audit_rows(limit, action, obj)
    ]
    return Table(
        ["time", "user", "action", "object", "details"], rows, title="audit log", empty="the audit log is empty"
    )


def _short(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v)
    return s[:19] if re.fullmatch(r"[0-9a-f]{64}", s) else s
