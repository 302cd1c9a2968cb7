"""Where aios_lab keeps its state: AIOS_HOME and the paths derived from it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from .errors import AiosError
from .names import check_name

PRIVATE_DIR = 0o700  # AIOS_HOME holds job configs, model source and data: its owner's only
PRIVATE_FILE = 0o600


def home() -> Path:
    """AIOS_HOME (default ``~/.aios``), created 0700 on first use; read at call time so tests can move it.

    A folder that exists already keeps the permissions its owner gave it.
    """
    path = Path(os.environ.get("AIOS_HOME") or Path.home() / ".aios").expanduser().resolve()
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, PRIVATE_DIR)
    return path


def open_private(path: str | Path, mode: str = "ab", **kwargs) -> IO:
    """Open ``path`` for writing, creating it 0600 (logs, tokens, the catalog: nobody else's business)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, PRIVATE_FILE), mode, **kwargs)


def private_dir(path: str | Path) -> Path:
    """``path`` as a directory, creating it and any missing parents 0700 (folders that exist keep their mode)."""
    target = Path(path)
    missing, path = [], target
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:  # made meanwhile by another writer: theirs to set
            continue
        os.chmod(d, PRIVATE_DIR)  # exact, whatever the umask
    return target


def private_umask() -> None:
    """Make every file this process creates private to its user (called by aios's own detached processes)."""
    os.umask(0o077)


def area(*parts: str) -> Path:
    """A path under AIOS_HOME built from validated names; it can never leave AIOS_HOME."""
    root = home()
    path = root.joinpath(*parts).resolve()
    if root != path and root not in path.parents:
        raise AiosError(f"path {'/'.join(parts)!r} would leave AIOS_HOME; use plain names")
    return path


def named(kind: str, name: str, *rest: str) -> Path:
    """``AIOS_HOME/<kind>/<name>/...`` for a validated object name (dataset, job, model)."""
    check_name(name, kind.rstrip("s"))
    return area(kind, name, *rest)
