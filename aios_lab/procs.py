"""Processes and ports: is a process still there (jobs, dataset writers, endpoints), which port is free."""

from __future__ import annotations

import socket

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


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
