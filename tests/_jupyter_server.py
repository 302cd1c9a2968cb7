"""Start a real Jupyter server (or JupyterLab) on a free loopback port with a token, for the sidebar tests; and
write an endpoint's catalog row the way a serving process does, for the endpoint views."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from aios_lab.procs import free_port


@dataclass
class Server:
    url: str  # ends with "/"
    token: str
    home: Path  # the AIOS_HOME the server reads
    root: Path  # the folder the server shows (notebooks go here)
    proc: subprocess.Popen
    log: Path

    def api(self, path: str) -> str:
        return f"{self.url}aios/api/{path}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start(tmp: Path, home: Path, *, lab: bool = False, timeout: float = 60.0) -> Server:
    """``jupyter server`` (or ``jupyter lab`` when ``lab``) with the aios_lab server extension, AIOS_HOME=home."""
    port, token = free_port(), secrets.token_hex(16)
    root = tmp / "root"
    root.mkdir(parents=True, exist_ok=True)
    settings, workspaces, runtime = tmp / "settings", tmp / "workspaces", tmp / "runtime"
    quiet = settings / "@jupyterlab" / "apputils-extension"
    quiet.mkdir(parents=True, exist_ok=True)
    (quiet / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    workspaces.mkdir(exist_ok=True)
    env = dict(
        os.environ,
        AIOS_HOME=str(home),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(workspaces),
        JUPYTER_RUNTIME_DIR=str(runtime),
    )
    extensions = {"aios_lab.jupyter_ext": True}
    if lab:
        extensions["jupyterlab"] = True
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab" if lab else "jupyter_server",
        f"--port={port}",
        "--ip=127.0.0.1",
        "--no-browser",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--ServerApp.jpserver_extensions={extensions!r}",
    ]
    if lab:
        cmd.append("--LabApp.expose_app_in_browser=True")  # window.jupyterapp: tests run commands through it
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI run as root
    log = tmp / ("lab.log" if lab else "server.log")
    with open(log, "wb") as out:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    server = Server(f"http://127.0.0.1:{port}/", token, home, root, proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Jupyter server exited with {proc.returncode}:\n{server.log_text()[-3000:]}")
        try:
            if requests.get(server.url + "api/status", headers=server.auth, timeout=2).status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"the Jupyter server did not answer within {timeout}s:\n{server.log_text()[-3000:]}")


def published_status(now: float, **over) -> dict:
    """An endpoint's status as the server publishes it into its catalog row (see docs/architecture.md)."""
    swap = {
        "model": "digits",
        "ref": "production",
        "version": 4,
        "serving": 3,
        "reason": "sha256 of params.safetensors does not match the manifest",
        "attempts": 2,
        "failed_at": now - 5,
        "next_retry": now + 4,
    }
    models = {
        "digits": {"requests": 1200, "errors": 3, "rejected": 0, "requests_per_s": 12.0, "swap_failure": swap},
        "iris": {"requests": 34, "errors": 0, "rejected": 0, "requests_per_s": 0.5, "swap_failure": None},
    }
    doc = {"time": now, "interval_s": 2.0, "ready": True, "requests": 1234, "errors": 3, "rejected": 0}
    return {**doc, "requests_per_s": 12.5, "models": models, **over}


def insert_endpoint(url: str, host: str, port: int, status: dict | None, pid: int | None = None) -> None:
    """A running endpoint's catalog row (the process ``pid``, this one by default) with ``status`` published."""
    from aios_lab.catalog import catalog

    now = time.time()
    with catalog().tx() as db:
        db.execute(
            "INSERT OR REPLACE INTO endpoints (url, host, port, pid, models, state, started, updated, status) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (url, host, port, pid or os.getpid(), "{}", "running", now, now, json.dumps(status)),
        )


def cluster_node(i: int, *, gpus: float = 0.0, alive: bool = True) -> dict:
    """A Ray node as ``aios.cluster``'s probe records it in ``AIOS_HOME/cluster/nodes.json``."""
    res = {"CPU": 8.0, "memory": 32 * 2**30, "aios_host": 1.0, **({"GPU": gpus} if gpus else {})}
    return {"node_id": f"{i:02d}" + "ab" * 27, "host": f"worker-{i}", "ip": f"10.0.0.{10 + i}", "alive": alive,
            "head": i == 0, "resources": res, "available": {**res, "CPU": 6.0}}  # fmt: skip


def connect_cluster(nodes: list[dict], address: str = "10.0.0.5:6379") -> None:
    """Store a cluster target and its nodes the way ``aios.cluster.connect`` does (no Ray: reads are file-only)."""
    from aios_lab.cluster import target

    target.save(target.Target(address, "none", "2.49.0", time.time()), None, {"nodes": nodes})


def llm_status(now: float) -> dict:
    """An endpoint's published status with a language model (``chat``) and a running canary on ``digits``."""
    llm = {
        "routes": ["/v1/chat/completions", "/v1/completions", "/v2/models/chat/generate"],
        "versions": [2],
        "tokens_per_s": 456.7,
        "ttft_p50_ms": 12.5,
        "ttft_p99_ms": 80.25,
        "running": 3,
        "waiting": 1,
        "kv_slots": 16,
        "kv_slots_used": 3,
        "prompt_tokens": 900,
        "generation_tokens": 5000,
        "finished": 40,
    }
    doc = published_status(now)
    doc["models"]["chat"] = {"requests": 40, "errors": 0, "rejected": 0, "requests_per_s": 1.0, "llm": llm}
    arms = {"canary": {"version": 4, "requests": 10, "errors": 0, "error_rate": 0.0, "mean_ms": 2.0},
            "base": {"version": 3, "requests": 30, "errors": 0, "error_rate": 0.0, "mean_ms": 2.1}}  # fmt: skip
    canary = {"model": "digits", "version": 4, "percent": 25, "base": 3, "state": "running", "started": now - 60,
              "ended": None, "header": "X-Request-ID", "arms": arms}  # fmt: skip
    overall = {"routes": ["/v1/models"], "models": ["chat"], "tokens_per_s": 456.7, "running": 3, "waiting": 1}
    return {**doc, "llm": overall, "canaries": {"digits": canary}}


def wait_for(cond, timeout: float = 90.0, what: str = "condition"):
    """``cond()``'s first true value, polled every 0.05 s; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
