"""Endpoints as the catalog records them: start one detached, list them, stop them; the row the server writes.

``serve()`` returns the running endpoint for a host:port if there is one, else starts
``python -m aios_lab.serve`` in its own session (it outlives the kernel) and waits until it answers
``/v2/health/ready``. The process keeps its row in the catalog's ``endpoints`` table up to date:
url, pid, state, the models it serves (``{name: [versions and aliases]}``) and ``status``, a JSON
document refreshed every ``status_interval_s`` (requests, errors, rates, failed hot swaps; its shape
is in docs/architecture.md). Readers such as the sidebar only read that row.

>>> ep = serve(port=8600, max_rows=4096)     # any ServeSettings field
>>> [e.url for e in endpoints()]
>>> stop(port=8600)                           # SIGTERM: requests in flight finish first
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import config
from ..catalog import catalog
from ..errors import Conflict, InvalidInput, NotFound
from ..procs import alive
from .auth import default_token, token_path
from .settings import DEFAULTS, ServeSettings

LIVE_STATES = ("running", "starting", "draining")


@dataclass
class Endpoint:
    """A serving endpoint as the catalog records it; ``status`` is what the server last published."""

    url: str
    host: str
    port: int
    pid: int
    models: dict = field(default_factory=dict)
    state: str = "running"
    started: float = 0.0
    status: dict | None = None
    kind: str = "local"  # "local": a server process here; "ray-serve": a Ray Serve deployment (pid: its driver)

    @property
    def token_file(self) -> Path:
        return token_path()

    @property
    def log_file(self) -> Path:
        return config.area("serve") / f"{self.port}.log"

    def alive(self) -> bool:
        return alive(self.pid)

    def stop(self, timeout: float = DEFAULTS.drain_timeout_s + 15) -> bool:
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

    def problems(self) -> list[str]:
        """One line per failed hot swap or model that would not load, from the published status; and a warning
        for plain HTTP off loopback (``--insecure``)."""
        from .tls import plain_http_warning

        out = []
        warning = plain_http_warning(self.url, self.host) if self.kind == "local" else None
        if warning and self.state in LIVE_STATES:
            out.append(warning)
        for name, m in sorted(((self.status or {}).get("models") or {}).items()):
            f = m.get("swap_failure")
            if f:
                wait = max(0, round(f["next_retry"] - time.time()))
                tries = f"{f['attempts']}x, next try in {wait} s"
                out.append(f"{name}: hot swap to v{f['version']} failed ({tries}): {f['reason']}")
            if m.get("load_failure"):
                out.append(f"{name}: not loaded: {m['load_failure']}")
        return out

    def to_json(self) -> dict:
        return {
            "url": self.url,
            "host": self.host,
            "port": self.port,
            "pid": self.pid,
            "models": self.models,
            "state": self.state,
            "started": self.started,
            "status": self.status,
            "kind": self.kind,
        }

    def __repr__(self) -> str:
        return f"Endpoint({self.url}, pid={self.pid}, state={self.state}, models={sorted(self.models)})"


def endpoints() -> list[Endpoint]:
    """Every endpoint the catalog knows, newest first; a recorded process that died shows state 'dead'."""
    out = []
    for r in catalog().query("SELECT * FROM endpoints ORDER BY started DESC"):
        status = json.loads(r["status"]) if r["status"] else None
        models = json.loads(r["models"])
        ep = Endpoint(r["url"], r["host"], r["port"], r["pid"], models, r["state"], r["started"], status, r["kind"])
        if ep.state in LIVE_STATES and not ep.alive():
            ep.state = "dead"
        out.append(ep)
    return out


class EndpointRow:
    """The row a server process keeps about itself, and its audit entries."""

    def __init__(self, settings: ServeSettings):
        self.url, self.host, self.port = settings.url, settings.host, settings.port

    def write(self, state: str, models: dict, status: dict | None) -> None:
        """Write the row (``started`` is kept while the pid is the same)."""
        now = time.time()
        with catalog().tx() as db:
            row = db.execute("SELECT started, pid FROM endpoints WHERE url = ?", (self.url,)).fetchone()
            started = row["started"] if row is not None and row["pid"] == os.getpid() else now
            db.execute(
                "INSERT OR REPLACE INTO endpoints (url, host, port, pid, models, state, started, updated, status) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (self.url, self.host, self.port, os.getpid(), json.dumps(models), state, started, now)
                + (json.dumps(status),),
            )

    def audit(self, action: str, **details: Any) -> None:
        catalog().audit(action, self.url, pid=os.getpid(), **details)


def _health(url: str, timeout: float = 1.0, cert: str | None = None) -> bool:
    """True when ``url`` answers ready; over HTTPS it must present the certificate in ``cert``."""
    from .tls import pinned_context

    context = pinned_context(cert) if url.startswith("https://") and cert else None
    try:
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=timeout, context=context) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def serve(
    port: int | None = None,
    host: str | None = None,
    detach: bool = True,
    *,
    timeout: float = 180.0,
    settings: ServeSettings | None = None,
    on: str | None = None,
    replicas: int | None = None,
    **options: Any,
) -> Endpoint:
    """Ensure a V2 endpoint serves on ``host:port``; returns it (started detached if not running).

    ``options``: any :class:`ServeSettings` field, e.g. ``models=["digits", "other@2"]`` (default: every
    registry model), ``max_batch_size``, ``max_rows``, ``batching=False``. ``detach=False`` runs the
    server in this process until SIGTERM/Ctrl-C. ``on="ray", replicas=N``: N replicas as a Ray Serve
    deployment on the connected cluster (see :mod:`aios_lab.cluster.serving`).
    """
    if port is not None:
        options["port"] = port
    if host is not None:
        options["host"] = host
    s = (settings or DEFAULTS).with_options(**options)
    if on not in (None, "local", "ray"):
        raise InvalidInput(f"--on {on!r}: serve on this machine (leave it out) or on the connected cluster (ray)")
    if on == "ray":
        from ..cluster.serving import serve_on_ray

        return serve_on_ray(s, replicas=1 if replicas is None else replicas, timeout=max(timeout, 600.0))
    if replicas is not None:
        raise InvalidInput("--replicas needs --on ray: one local server is one process")
    from .tls import check_transport

    check_transport(s)  # HTTPS files that fit together; no plain HTTP off loopback without --insecure
    url = s.url
    for ep in endpoints():
        if ep.url == url and ep.state == "running" and _health(url, cert=s.tls_cert):
            return ep
    default_token()  # create the token file before the first client needs it
    if not detach:
        from .process import main

        main(s.to_argv())
        return next(e for e in endpoints() if e.url == url)
    if _port_busy(s.host, s.port):
        raise Conflict(f"{s.host}:{s.port} is already in use by another program; pick another --port")
    if s.tf_serving_port and (s.tf_serving_port == s.port or _port_busy(s.host, s.tf_serving_port)):
        raise Conflict(f"{s.host}:{s.tf_serving_port} is already in use; pick another --tf-serving-port")
    logfile = config.area("serve") / f"{s.port}.log"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with config.open_private(logfile) as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aios_lab.serve", *s.to_argv()],
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
            raise InvalidInput(
                f"the server exited with code {proc.returncode}; its log {logfile} ends:\n" + "\n".join(tail)
            )
        if _health(url, timeout=0.5, cert=s.tls_cert):
            ep = next((e for e in endpoints() if e.url == url and e.pid == proc.pid), None)
            if ep is not None:
                return ep
        time.sleep(0.1)
    proc.terminate()
    raise Conflict(f"the server on {url} did not become ready in {timeout:.0f}s; see {logfile}")


def stop(
    port: int | None = None, *, all: bool = False, timeout: float = DEFAULTS.drain_timeout_s + 15
) -> list[Endpoint]:
    """Stop the endpoint(s) on ``port`` (any host), or every one with ``all=True``: SIGTERM, then wait while
    they drain. Returns the endpoints stopped; their catalog rows end in state 'stopped'."""
    if (port is None) == (not all):
        raise InvalidInput("say which endpoints to stop: a port (--port P) or all of them (--all), not both")
    live = [e for e in endpoints() if e.state in LIVE_STATES or (e.state == "dead" and e.pid)]
    chosen = [e for e in live if all or e.port == port]
    if not chosen:
        where = "" if all else f" on port {port}"
        raise NotFound(f"no running endpoint{where}; `aios endpoints` lists them")
    stopped, stuck = [], []
    for ep in chosen:
        if ep.stop(timeout + (60 if ep.kind == "ray-serve" else 0)):  # a Ray driver also deletes its Serve app
            _mark_stopped(ep)
            ep.state = "stopped"
            stopped.append(ep)
        else:
            stuck.append(ep)
    if stuck:
        pids = ", ".join(str(e.pid) for e in stuck)
        raise Conflict(
            f"{', '.join(e.url for e in stuck)} did not exit within {timeout:.0f} s and may still be draining; "
            f"`kill -9 {pids}` ends it at once"
        )
    return stopped


def _mark_stopped(ep: Endpoint) -> None:
    """A server that drained wrote 'stopped' itself; one that was killed or died gets it written here."""
    cat = catalog()
    with cat.tx() as db:
        changed = db.execute(
            "UPDATE endpoints SET state = 'stopped', updated = ? WHERE url = ? AND pid = ? AND state != 'stopped'",
            (time.time(), ep.url, ep.pid),
        ).rowcount
    if changed:  # a server that drained has audited its own stop
        cat.audit("serve.stop", ep.url, pid=ep.pid, exited_without_recording=True)


def _port_busy(host: str, port: int) -> bool:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False
