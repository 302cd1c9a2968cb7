"""A metrics server in a process of its own (what ``%aios metrics serve`` starts from a notebook), and stopping it.

The process is ``python -m aios_lab.observability``; it outlives the kernel that started it, like an endpoint.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import psutil
import requests

from .. import config
from ..errors import Conflict, InvalidInput, NotFound
from .server import DEFAULT_HOST, DEFAULT_PORT, check_bind, record_path

PROCESS = "aios_lab.observability"


@dataclass(frozen=True)
class MetricsServer:
    """A running metrics server, as its record under ``AIOS_HOME/metrics/`` says (``started``: its process's
    start time, unix s)."""

    pid: int
    host: str
    port: int
    url: str
    started: float

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "host": self.host, "port": self.port, "url": self.url, "started": self.started}


def servers() -> list[MetricsServer]:
    """The metrics servers of this AIOS_HOME whose process still runs, by port."""
    folder = config.area("metrics")
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            s = MetricsServer(**json.loads(path.read_text()))
        except (ValueError, TypeError, OSError):
            continue
        if _alive(s):
            found.append(s)
    return sorted(found, key=lambda s: s.port)


def start(
    port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, *, insecure: bool = False, timeout: float = 30.0
) -> MetricsServer:
    """Ensure a detached metrics server runs on ``host:port``; returns it (the one running there already, if any)."""
    check_bind(host, port, insecure)
    for s in servers():
        if s.port == port:
            if s.host != host:
                raise Conflict(
                    f"a metrics server on port {port} listens on {s.host}; `aios metrics stop --port {port}`"
                )
            return s
    if _port_busy(host, port):
        raise Conflict(f"cannot listen on {host}:{port} (another program has it); pick another --port")
    log = config.area("metrics") / f"{port}.log"
    config.private_dir(log.parent)
    argv = [sys.executable, "-m", PROCESS, "--port", str(port), "--host", host, *(["--insecure"] if insecure else [])]
    with config.open_private(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "AIOS_HOME": str(config.home())},
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(empty log)"]
            raise InvalidInput(f"the metrics server exited with code {proc.returncode}: {tail[0]}")
        found = next((s for s in servers() if s.pid == proc.pid), None)
        if found is not None and _answers(found.url):
            return found
        time.sleep(0.1)
    proc.terminate()
    raise Conflict(f"the metrics server on port {port} did not answer within {timeout:.0f} s; see {log}")


def stop(port: int | None = None, *, all: bool = False, timeout: float = 10.0) -> list[MetricsServer]:
    """Stop the metrics server on ``port`` (or every one with ``all=True``): SIGTERM, then wait for it to exit."""
    if (port is None) == (not all):
        raise InvalidInput("say which metrics server to stop: a port (--port P) or all of them (--all), not both")
    chosen = [s for s in servers() if all or s.port == port]
    if not chosen:
        raise NotFound(f"no metrics server{'' if all else f' on port {port}'}; `aios metrics serve` starts one")
    for s in chosen:
        os.kill(s.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(s) for s in chosen):
        time.sleep(0.05)
    stuck = [s for s in chosen if _alive(s)]
    if stuck:
        raise Conflict(f"metrics server pid {stuck[0].pid} did not exit within {timeout:.0f} s; `kill -9` it")
    for s in chosen:  # a server killed before it could tidy up leaves its record behind
        path = record_path(s.port)
        if path.exists() and json.loads(path.read_text()).get("pid") == s.pid:
            path.unlink()
    return chosen


def _alive(s: MetricsServer) -> bool:
    """True while the recorded process runs: same pid and start time (a recycled pid does not count)."""
    try:
        p = psutil.Process(s.pid)
        return p.status() != psutil.STATUS_ZOMBIE and abs(p.create_time() - s.started) < 0.01
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _port_busy(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError:
            return True
    return False


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False
