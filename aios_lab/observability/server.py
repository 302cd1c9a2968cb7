"""``aios metrics serve``: a small HTTP server for a Prometheus server to scrape, in the foreground.

It binds to 127.0.0.1 unless told otherwise, and asks for ``insecure=True`` before it listens anywhere
else: it has no token and no TLS (the Jupyter route ``/aios/api/metrics`` is the authenticated face).
While it runs it keeps a record ``AIOS_HOME/metrics/PORT.json`` (pid, host, port, url, started), which
``aios metrics stop`` and a second ``serve`` on that port read.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from prometheus_client import start_http_server

from .. import config
from ..errors import Conflict, InvalidInput
from .exposition import registry

DEFAULT_PORT = 9710
DEFAULT_HOST = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, port: int, insecure: bool = False) -> None:
    """Refuse a port out of range, and a non-loopback host unless ``insecure``, before anything starts."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidInput(f"--port must be a whole number from 1 to 65535, not {port!r}")
    if not is_loopback(host) and not insecure:
        raise InvalidInput(
            f"--host {host} would let anyone who reaches this machine read job names and numbers with no token; "
            "keep 127.0.0.1 (Prometheus on this machine), scrape the Jupyter route /aios/api/metrics with its "
            "token, or pass --insecure"
        )


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/metrics"


def record_path(port: int) -> Path:
    return config.area("metrics") / f"{int(port)}.json"


def run(
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    *,
    insecure: bool = False,
    on_ready: Callable[[str], Any] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve ``/metrics`` on ``host:port`` until Ctrl-C, SIGTERM or ``stop`` is set (this thread blocks)."""
    check_bind(host, port, insecure)
    try:
        httpd, thread = start_http_server(port, host.strip("[]"), registry())
    except OSError as exc:
        raise Conflict(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port") from None
    stop = stop or threading.Event()
    url = url_of(host, port)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    record = record_path(port)
    try:
        started = psutil.Process().create_time()  # with the pid, names this process and no later one
        _write_record(record, {"pid": os.getpid(), "host": host, "port": port, "url": url, "started": started})
        if on_ready is not None:
            on_ready(url)
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(1.0):
                pass
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
        _remove_record(record)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _write_record(path: Path, data: dict[str, Any]) -> None:
    config.private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with config.open_private(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _remove_record(path: Path) -> None:
    """Remove this process's record (a later server on the port may have replaced it: then keep that one)."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
