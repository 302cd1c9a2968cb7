"""Alias moves with a history, protected aliases, and rollback.

Every write of an alias goes through :func:`move` inside the catalog transaction that makes it, so the
``alias_history`` table knows each target an alias ever had and ``rollback`` can step back through them.
A protected alias (``production`` always, others by :func:`protect`) is moved only by ``promote`` and
``rollback``; a plain ``set_alias`` or ``publish --alias`` may create it where it does not exist yet, but
never move or remove it.

>>> aios.registry.protect("digits", "staging")           # staging now moves only by promote/rollback
>>> aios.rollback("digits", "production")                 # back to where production pointed before
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from ..catalog import catalog, user
from ..errors import Conflict, InvalidInput, NotFound
from ..names import check_name

ALWAYS_PROTECTED = ("production",)
GATED = ("promote", "rollback")  # the only actions that may move a protected alias


def is_protected(model: str, alias: str, db: sqlite3.Connection | None = None) -> bool:
    """True for ``production`` and for any alias marked with :func:`protect` on this model."""
    if alias in ALWAYS_PROTECTED:
        return True
    q = "SELECT 1 FROM protected_aliases WHERE model=? AND alias=?"
    row = (db.execute(q, (model, alias)).fetchone()) if db is not None else catalog().one(q, (model, alias))
    return row is not None


def protected(model: str) -> list[str]:
    """The protected aliases of ``model`` (``production`` first)."""
    rows = catalog().query("SELECT alias FROM protected_aliases WHERE model=? ORDER BY alias", (model,))
    return [*ALWAYS_PROTECTED, *(r[0] for r in rows if r[0] not in ALWAYS_PROTECTED)]


def protect(model: str, alias: str, on: bool = True) -> bool:
    """Mark ``alias`` of ``model`` protected (``on=False`` lifts it); ``production`` is always protected."""
    from .versions import check_alias

    check_name(model, "model")
    check_alias(alias)
    if alias in ALWAYS_PROTECTED:
        if not on:
            raise InvalidInput(f"{alias} is always protected; it moves only by `%aios promote` or `%aios rollback`")
        return True
    cat = catalog()
    with cat.tx() as db:
        if on:
            db.execute(
                "INSERT OR REPLACE INTO protected_aliases (model, alias, time, user) VALUES (?,?,?,?)",
                (model, alias, time.time(), user()),
            )
        else:
            db.execute("DELETE FROM protected_aliases WHERE model=? AND alias=?", (model, alias))
    cat.audit("alias.protect" if on else "alias.unprotect", f"{model}@{alias}")
    return on


def check_plain_move(model: str, alias: str, version: int | None, db: sqlite3.Connection | None = None) -> None:
    """Refuse a plain (not promote/rollback) move or removal of a protected alias that points somewhere."""
    if not is_protected(model, alias, db):
        return
    q = "SELECT version FROM aliases WHERE model=? AND alias=?"
    row = db.execute(q, (model, alias)).fetchone() if db is not None else catalog().one(q, (model, alias))
    if row is None or (version is not None and int(row[0]) == int(version)):
        return  # creating it, or pointing it where it already is, moves nothing
    target = version if version is not None else "V"
    raise Conflict(
        f"{model}@{alias} is protected (now v{row[0]}): move it with `%aios promote {model} --to {alias} "
        f"--version {target}` or `%aios rollback {model} {alias}`"
    )


def check_publish(model: str, alias: str | None) -> None:
    """Before a publish or import with ``--alias``: refuse a protected alias that already points somewhere."""
    if alias is None or not is_protected(model, alias):
        return
    row = catalog().one("SELECT version FROM aliases WHERE model=? AND alias=?", (model, alias))
    if row is not None:
        raise Conflict(
            f"{model}@{alias} is protected (now v{row[0]}): publish without --alias {alias}, then "
            f"`%aios promote {model} --to {alias} --version N` moves it (with --require to gate it)"
        )


def move(
    db: sqlite3.Connection, model: str, alias: str, version: int | None, action: str, *, check: bool = True
) -> int | None:
    """Point ``alias`` at ``version`` (None removes it) and record the move; call inside the writing transaction.

    Returns the version it pointed at before (None if it did not exist). A protected alias is refused
    unless ``action`` is promote or rollback (see :func:`check_plain_move`) or ``check`` is off (a forced
    deletion of the version it points at)."""
    if check and action not in GATED:
        check_plain_move(model, alias, version, db)
    row = db.execute("SELECT version FROM aliases WHERE model=? AND alias=?", (model, alias)).fetchone()
    previous = int(row[0]) if row else None
    if version is None:
        db.execute("DELETE FROM aliases WHERE model=? AND alias=?", (model, alias))
    else:
        db.execute(
            "INSERT OR REPLACE INTO aliases (model, alias, version, updated) VALUES (?,?,?,?)",
            (model, alias, int(version), time.time()),
        )
    if previous != version:
        db.execute(
            "INSERT INTO alias_history (model, alias, version, previous, action, time, user) VALUES (?,?,?,?,?,?,?)",
            (model, alias, version, previous, action, time.time(), user()),
        )
    return previous


def history(model: str, alias: str | None = None) -> list[dict[str, Any]]:
    """Every recorded move of ``model``'s aliases (of one ``alias`` if given), oldest first."""
    q, args = "SELECT * FROM alias_history WHERE model=?", [model]
    if alias is not None:
        q, args = q + " AND alias=?", [*args, alias]
    return [dict(r) for r in catalog().query(q + " ORDER BY id", tuple(args))]


def rollback_target(model: str, alias: str) -> tuple[int, int]:
    """``(current, previous)``: where ``alias`` points now and where it pointed before the move now in force.

    The history is replayed as a stack: each move pushes its version, each rollback pops one, so
    rolling back twice after three promotes lands on the first."""
    row = catalog().one("SELECT version FROM aliases WHERE model=? AND alias=?", (model, alias))
    if row is None:
        raise NotFound(f"model {model!r} has no alias {alias!r}; nothing to roll back")
    stack: list[int | None] = []
    for h in history(model, alias):
        if h["action"] == "rollback" and stack:
            stack.pop()
        else:
            stack.append(h["version"])
    current = int(row[0])
    if len(stack) < 2 or stack[-1] != current or stack[-2] is None:
        raise Conflict(f"{model}@{alias} (v{current}) has no earlier version to roll back to; promote one instead")
    return current, int(stack[-2])


__all__ = [
    "ALWAYS_PROTECTED",
    "is_protected",
    "protected",
    "protect",
    "check_plain_move",
    "check_publish",
    "move",
    "history",
]
