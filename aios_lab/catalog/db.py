"""One SQLite catalog (WAL) under AIOS_HOME, shared by kernels, workers, the server and the CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import config
from .schema import MIGRATIONS

BUSY_TIMEOUT_MS = 30_000


class Catalog:
    """A handle on ``AIOS_HOME/catalog.sqlite``; connections are per thread and per process.

    >>> cat = catalog()
    >>> with cat.tx() as db:
    ...     db.execute("INSERT INTO audit (time, user, action, object, details) VALUES (?,?,?,?,?)", ...)
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._migrate()

    def connect(self) -> sqlite3.Connection:
        """This thread's connection (a forked child opens its own)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            if not self.path.exists():  # the catalog holds job configs and model source: 0600
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, config.PRIVATE_FILE))
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): all of it commits, or none of it."""
        db = self.connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        return self.connect().execute(sql, params).fetchall()

    def one(self, sql: str, params: tuple | dict = ()) -> sqlite3.Row | None:
        return self.connect().execute(sql, params).fetchone()

    def audit(self, action: str, obj: str, **details: Any) -> None:
        """Append who did what to the audit log."""
        with self.tx() as db:
            db.execute(
                "INSERT INTO audit (time, user, action, object, details) VALUES (?,?,?,?,?)",
                (time.time(), user(), action, obj, json.dumps(details, sort_keys=True)),
            )

    def _migrate(self) -> None:
        db = self.connect()
        db.execute("BEGIN EXCLUSIVE")
        try:
            have = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[have:], start=have + 1):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        return self.one("PRAGMA user_version")[0]


VERSIONED = ("datasets", "model_defs", "models")


def next_version(db: sqlite3.Connection, table: str, name: str) -> int:
    """The next version number of ``name`` in ``table``; call it inside the transaction that inserts it.

    Numbers of deleted versions are never given out again, so ``NAME@3`` always means the same thing.
    """
    if table not in VERSIONED:
        raise ValueError(f"{table!r} holds no versions")
    return 1 + int(
        db.execute(
            f"SELECT MAX(COALESCE((SELECT MAX(version) FROM {table} WHERE name=?), 0), "
            "COALESCE((SELECT MAX(version) FROM deleted_versions WHERE kind=? AND name=?), 0))",
            (name, table, name),
        ).fetchone()[0]
    )


def retire(db: sqlite3.Connection, table: str, name: str, version: int, hash: str | None = None) -> None:
    """Record that ``name`` version ``version`` of ``table`` was deleted (inside the deleting transaction)."""
    if table not in VERSIONED:
        raise ValueError(f"{table!r} holds no versions")
    db.execute(
        "INSERT OR REPLACE INTO deleted_versions (kind, name, version, hash, deleted) VALUES (?,?,?,?,?)",
        (table, name, int(version), hash, time.time()),
    )


def deleted_version(table: str, name: str, version: int) -> dict[str, Any] | None:
    """The record of a deleted version, or None (to tell "deleted" from "never existed")."""
    r = catalog().one(
        "SELECT * FROM deleted_versions WHERE kind=? AND name=? AND version=?", (table, name, int(version))
    )
    return dict(r) if r else None


def user() -> str:
    """The OS user acting (for the audit log and the registry's created_by)."""
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return str(os.getuid())


_catalogs: dict[Path, Catalog] = {}
_lock = threading.Lock()


def catalog() -> Catalog:
    """The catalog of the current AIOS_HOME (opened, and migrated, once per process)."""
    path = config.home() / "catalog.sqlite"
    with _lock:
        if path not in _catalogs:
            _catalogs[path] = Catalog(path)
        return _catalogs[path]
