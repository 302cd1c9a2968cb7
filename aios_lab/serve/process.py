"""The serving process: start it detached, record it in the catalog, drain it on SIGTERM.

``serve()`` returns the running endpoint for a host:port if there is one, else starts
``python -m aios_lab.serve`` in its own session (it outlives the kernel) and waits until it answers
``/v2/health/ready``. The process writes its row in the catalog's ``endpoints`` table (url, pid,
the models it serves, state) and a structured JSON access log ``AIOS_HOME/serve/<port>.access.log``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .. import config
from ..catalog import catalog
from ..errors import AiosError
from ..procs import alive
from .auth import default_token, token_path

log = logging.getLogger("aios_lab.serve")


@dataclass
class Endpoint:
    """A serving endpoint as the catalog records it."""

    url: str
    host: str
    port: int
    pid: int
    models: dict = field(default_factory=dict)
    state: str = "running"
    started: float = 0.0

    @property
    def token_file(self) -> Path:
        return token_path()

    @property
    def log_file(self) -> Path:
        return config.area("serve") / f"{self.port}.log"

    def alive(self) -> bool:
        return alive(self.pid)

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM (the server drains requests in flight), then wait; True once it has exited."""
        if not self.alive():
            return True
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            time.sleep(0.05)
        return False

    def to_json(self) -> dict:
        return {
            "url": self.url,
            "host": self.host,
            "port": self.port,
            "pid": self.pid,
            "models": self.models,
            "state": self.state,
            "started": self.started,
        }

    def __repr__(self) -> str:
        return f"Endpoint({self.url}, pid={self.pid}, state={self.state}, models={sorted(self.models)})"


def _url(host: str, port: int) -> str:
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def endpoints() -> list[Endpoint]:
    """Every endpoint the catalog knows, newest first; a recorded process that died shows state 'dead'."""
    out = []
    for r in catalog().query("SELECT * FROM endpoints ORDER BY started DESC"):
        ep = Endpoint(r["url"], r["host"], r["port"], r["pid"], json.loads(r["models"]), r["state"], r["started"])
        if ep.state in ("running", "starting", "draining") and not ep.alive():
            ep.state = "dead"
        out.append(ep)
    return out


def _health(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def serve(
    port: int = 8500,
    host: str = "127.0.0.1",
    detach: bool = True,
    *,
    models: list[str] | None = None,
    max_batch_size: int = 32,
    max_queue_delay_ms: float = 2.0,
    batching: bool = True,
    max_body_mb: float = 64.0,
    timeout: float = 180.0,
) -> Endpoint:
    """Ensure a V2 endpoint serves on ``host:port``; returns it (started detached if not running).

    ``models``: names (``name``, ``name@3``, ``name@staging``) to serve; default every registry model.
    ``detach=False`` runs the server in this process until SIGTERM/Ctrl-C.
    """
    if not isinstance(port, int) or not 0 < port < 65536:
        raise AiosError(f"port must be 1-65535, got {port!r}")
    url = _url(host, port)
    for ep in endpoints():
        if ep.url == url and ep.state == "running" and _health(url):
            return ep
    default_token()  # create the token file before the first client needs it
    argv = [
        "--port",
        str(port),
        "--host",
        host,
        "--max-batch-size",
        str(max_batch_size),
        "--max-queue-delay-ms",
        str(max_queue_delay_ms),
        "--max-body-mb",
        str(max_body_mb),
    ]
    if not batching:
        argv.append("--no-batching")
    if models:
        argv += ["--models", ",".join(models)]
    if not detach:
        main(argv)
        return next(e for e in endpoints() if e.url == url)
    if _port_busy(host, port):
        raise AiosError(f"{host}:{port} is already in use by another program; pick another --port")
    logfile = config.area("serve") / f"{port}.log"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with config.open_private(logfile) as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aios_lab.serve", *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "AIOS_HOME": str(config.home())},
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = logfile.read_text(errors="replace").splitlines()[-8:]
            raise AiosError(
                f"the server exited with code {proc.returncode}; its log {logfile} ends:\n" + "\n".join(tail)
            )
        if _health(url, timeout=0.5):
            ep = next((e for e in endpoints() if e.url == url and e.pid == proc.pid), None)
            if ep is not None:
                return ep
        time.sleep(0.1)
    proc.terminate()
    raise AiosError(f"the server on {url} did not become ready in {timeout:.0f}s; see {logfile}")


def _port_busy(host: str, port: int) -> bool:
    import socket

    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


# ------------------------------------------------------------------------------------------------
# inside the server process


def _record(url: str, host: str, port: int, state: str, models: dict) -> None:
    now = time.time()
    with catalog().tx() as db:
        row = db.execute("SELECT started, pid FROM endpoints WHERE url = ?", (url,)).fetchone()
        started = row["started"] if row is not None and row["pid"] == os.getpid() else now
        db.execute(
            "INSERT OR REPLACE INTO endpoints (url, host, port, pid, models, state, started, updated) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (url, host, port, os.getpid(), json.dumps(models), state, started, now),
        )


def configure_jax() -> None:
    """Server-side JAX settings; call before JAX runs anything (toolchain.md has the measurements)."""
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)  # 17.6 us vs 55 us for a batch-1 forward


def build_app(
    *,
    models: list[str] | None = None,
    max_batch_size: int = 32,
    max_queue_delay_ms: float = 2.0,
    batching: bool = True,
    max_body_mb: float = 64.0,
    access_log=None,
    url: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    poll_interval: float = 1.0,
):
    """The app as the server process runs it; with ``url`` it records itself in the catalog."""
    from .app import V2App
    from .metrics import Metrics
    from .repository import Repository

    metrics = Metrics()

    def on_change(repo):
        if url is not None and getattr(app, "ready", False):
            try:
                _record(url, host, port, "running", repo.summary())
            except Exception as exc:  # the catalog is busy: the next change records it
                log.warning("could not record the endpoint: %s", exc)

    repo = Repository(
        max_batch_size=max_batch_size,
        max_queue_delay=max_queue_delay_ms / 1000,
        batching=batching,
        on_change=on_change,
        batch_observer=metrics.batch_observer,
    )

    def started(a):
        if url is not None:
            _record(url, host, port, "running", a.repository.summary())
            catalog().audit("serve.start", url, pid=os.getpid(), models=a.repository.summary())

    def stopped(a):
        if url is not None:
            _record(url, host, port, "stopped", a.repository.summary())
            catalog().audit("serve.stop", url, pid=os.getpid())

    app = V2App(
        repo,
        metrics=metrics,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        models=models,
        access_log=access_log,
        poll_interval=poll_interval,
        on_started=started,
        on_stopped=stopped,
    )
    return app


def main(argv: list[str] | None = None) -> int:
    """``python -m aios_lab.serve``: run the server in the foreground until SIGTERM (drains first)."""
    config.private_umask()
    import argparse

    p = argparse.ArgumentParser(prog="python -m aios_lab.serve", description="the aios_lab V2 inference server")
    p.add_argument("--port", type=int, default=8500)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--models", default=None, help="comma-separated: name, name@3, name@alias (default: all)")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-queue-delay-ms", type=float, default=2.0)
    p.add_argument("--no-batching", action="store_true")
    p.add_argument("--max-body-mb", type=float, default=64.0)
    p.add_argument("--drain-timeout", type=float, default=30.0)
    a = p.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_jax()
    import uvicorn

    default_token()
    url = _url(a.host, a.port)
    access = config.open_private(config.area("serve") / f"{a.port}.access.log", "ab", buffering=1 << 16)
    app = build_app(
        models=a.models.split(",") if a.models else None,
        max_batch_size=a.max_batch_size,
        max_queue_delay_ms=a.max_queue_delay_ms,
        batching=not a.no_batching,
        max_body_mb=a.max_body_mb,
        access_log=access,
        url=url,
        host=a.host,
        port=a.port,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # SIGTERM/SIGINT: stop taking work, let requests in flight finish
            if not app.draining:
                app.draining = True
                log.info("draining (signal %s)", sig)
                try:
                    _record(url, a.host, a.port, "draining", app.repository.summary())
                except Exception:
                    pass
            super().handle_exit(sig, frame)

    cfg = uvicorn.Config(
        app,
        host=a.host,
        port=a.port,
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=a.drain_timeout,
        timeout_keep_alive=30,
        h11_max_incomplete_event_size=1 << 20,
    )
    server = Server(cfg)
    server.run()
    access.close()
    return 0 if app.ready or app.draining else 1
