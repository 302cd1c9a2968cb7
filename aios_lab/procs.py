"""Is a process still there? One answer for jobs, dataset writers and endpoints."""
from __future__ import annotations

import psutil


def alive(pid: int | None, cmdline_has: str | None = None) -> bool:
    """True if ``pid`` runs and is not a zombie (and, if given, its command line mentions ``cmdline_has``,
    which guards against a recycled pid)."""
    if not pid:
        return False
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return cmdline_has is None or any(cmdline_has in part for part in p.cmdline())
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process: it exists
        return True
