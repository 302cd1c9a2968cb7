"""Where aios_lab keeps its state: AIOS_HOME and the paths derived from it."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import AiosError
from .names import check_name


def home() -> Path:
    """AIOS_HOME (default ``~/.aios``), created on first use; read at call time so tests can move it."""
    path = Path(os.environ.get("AIOS_HOME") or Path.home() / ".aios").expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


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
