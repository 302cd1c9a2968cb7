"""``aios.cluster.connect``, ``disconnect``, ``status``, ``nodes``, ``devices``: the cluster target's Python API.

``connect`` and ``status`` look at the cluster from a child process (``probe.py``); ``devices`` and
``load`` only read files, so the sidebar's reads never start a process.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AiosError, Conflict, InvalidInput
from . import target as targetlib
from .capacity import GangShape, check_fits
from .probe import probe, reachable
from .ray_support import require_ray
from .reach import TRUST_S, NotShared
from .work import running_on_nodes


@dataclass(frozen=True)
class Node:
    """One Ray node: its resources, what is free (None where Ray does not tell), and what aios runs there."""

    node_id: str
    host: str | None
    ip: str | None
    alive: bool
    head: bool
    cpus: float
    gpus: float
    tpus: float
    memory: int
    resources: dict[str, float]
    available: dict[str, float] | None
    aios: list[str] = field(default_factory=list)

    @classmethod
    def from_probe(cls, n: dict[str, Any], work: dict[str, list[str]]) -> Node:
        r = n["resources"]
        return cls(
            node_id=n["node_id"],
            host=n.get("host"),
            ip=n.get("ip"),
            alive=n["alive"],
            head=n["head"],
            cpus=r.get("CPU", 0.0),
            gpus=r.get("GPU", 0.0),
            tpus=r.get("TPU", 0.0),
            memory=int(r.get("memory", 0)),
            resources=r,
            available=n.get("available"),
            aios=list(work.get(n["node_id"], [])),
        )

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ClusterStatus:
    """The connected cluster and its nodes as last seen (``checked``: when)."""

    address: str
    auth: str
    ray_version: str
    connected: float
    checked: float | None
    nodes: list[Node]

    def to_json(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.__dict__.items() if k != "nodes"}, "nodes": [n.to_json() for n in self.nodes]}


def connect(
    address: str, *, token: str | None = None, token_file: str | os.PathLike | None = None, no_auth: bool = False
) -> ClusterStatus:
    """Check that a Ray cluster answers at ``address`` with this token, then make it this AIOS_HOME's target.

    The token comes from ``token``, ``token_file``, else ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH`` /
    ``~/.ray/auth_token`` (Ray's own places); aios keeps a 0600 copy. ``no_auth`` is for a cluster started
    without ``RAY_AUTH_MODE=token``. Nothing is stored unless the cluster answered.
    """
    version = require_ray()
    host, port = targetlib.parse_address(address)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if no_auth and (token or token_file):
        raise InvalidInput("--no-auth and a token contradict each other; give one of them")
    why = reachable(host, port)
    if why is not None:
        raise AiosError(
            f"cannot reach a Ray cluster at {address} ({why}); check the HOST:PORT `ray start --head` printed"
        )
    secret = None if no_auth else _find_token(token, token_file)
    if secret is None and not no_auth:
        raise AiosError(
            "no Ray auth token found: give --token-file FILE (`ray get-auth-token` on the head prints it), "
            "or --no-auth for a cluster started without RAY_AUTH_MODE=token"
        )
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secret} if secret else {"RAY_AUTH_MODE": "disabled"}
    seen = probe(address, env)
    t = targetlib.Target(address, "token" if secret else "none", seen["ray_version"] or version, time.time())
    targetlib.save(t, secret, snapshot_of(seen))
    return _status(t, targetlib.load_nodes())


def disconnect() -> bool:
    """Forget the connected cluster (its address, token copy and node snapshot); True if one was connected.

    Refused while a cluster job is queued or running: its supervisor and the queue need the target.
    """
    if targetlib.load() is None:
        return False
    busy = cluster_jobs()
    if busy:
        raise Conflict(
            f"cluster job {busy[0]} is queued or running on this cluster; `%aios cancel {busy[0]}`, then disconnect"
        )
    return targetlib.remove()


def status() -> ClusterStatus:
    """The connected cluster with its nodes looked at now (a child process connects to it)."""
    t = targetlib.require()
    seen = probe(t.address, _driver_env_reached(t))
    targetlib.save_nodes(snapshot_of(seen))
    return _status(t, targetlib.load_nodes())


def check_gang(shape: GangShape, checkpoint_root: str, dataset_path: str, dataset_hash: str | None) -> ClusterStatus:
    """Before a gang is queued: the cluster answers, could ever hold ``shape``, and every node that could
    hold a rank reaches ``checkpoint_root`` and the dataset (one-line errors; stores only the look)."""
    t = targetlib.require()
    gang = {
        "shape": shape.__dict__,
        "checkpoint_dir": checkpoint_root,
        "dataset_path": dataset_path,
        "dataset_hash": dataset_hash,
        "known": targetlib.load_reached(TRUST_S),
    }
    seen = probe(t.address, _driver_env_reached(t), gang=gang)
    targetlib.save_nodes(snapshot_of(seen))
    check_fits(shape, seen["nodes"])
    if seen.get("reach"):
        raise NotShared(seen["reach"])
    targetlib.save_reached(seen["reach_key"], TRUST_S)
    return _status(t, targetlib.load_nodes())


def nodes(refresh: bool = True) -> list[Node]:
    """The connected cluster's nodes: looked at now, or (``refresh=False``) as last seen."""
    if refresh:
        return status().nodes
    targetlib.require()
    snap = targetlib.load_nodes()
    return [Node.from_probe(n, running_on_nodes()) for n in (snap or {}).get("nodes", [])]


def devices() -> dict[str, Any] | None:
    """The cluster's part of ``aios.devices()``: its nodes as last seen, or None when none is connected.

    Reads files only (no process, no network), so the sidebar can call it on every refresh.
    """
    t = targetlib.load()
    if t is None:
        return None
    return _status(t, targetlib.load_nodes()).to_json()


def driver_env(t: targetlib.Target) -> dict[str, str]:
    """The environment a Ray driver of the connected cluster needs (auth mode and token file)."""
    return targetlib.ray_env(t.auth, targetlib.token_path() if t.auth == "token" else None)


def _driver_env_reached(t: targetlib.Target) -> dict[str, str]:
    """``driver_env``, after a quick TCP check that the head answers (an unreachable head: one line, at once)."""
    why = reachable(*targetlib.parse_address(t.address))
    if why is not None:
        raise AiosError(
            f"cannot reach the Ray cluster at {t.address} ({why}); is its head up? "
            "`%aios cluster connect HOST:PORT` points aios at another one"
        )
    return driver_env(t)


def snapshot_of(seen: dict[str, Any]) -> dict[str, Any]:
    """What ``nodes.json`` keeps of a look: the nodes, and the placement groups of aios holding resources."""
    return {"nodes": seen["nodes"], "placement_groups": seen.get("placement_groups", [])}


def cluster_jobs() -> list[str]:
    """Names of the cluster jobs queued or running in this AIOS_HOME (reads the catalog only)."""
    from ..catalog import catalog

    found = catalog().query(
        "SELECT name FROM jobs WHERE state IN ('queued','running') AND json_extract(config, '$.on') = 'ray' "
        "ORDER BY created"
    )
    return [r["name"] for r in found]


def _status(t: targetlib.Target, snap: dict[str, Any] | None) -> ClusterStatus:
    work = running_on_nodes()
    snap = snap or {}
    return ClusterStatus(
        address=t.address,
        auth=t.auth,
        ray_version=t.ray_version,
        connected=t.connected,
        checked=snap.get("checked"),
        nodes=[Node.from_probe(n, work) for n in snap.get("nodes", [])],
    )


def _find_token(token: str | None, token_file: str | os.PathLike | None) -> str | None:
    """The token from the arguments, else from Ray's own places; None if there is none."""
    if token is None and token_file is not None:
        path = Path(token_file).expanduser()
        if not path.is_file():
            raise InvalidInput(f"token file {str(token_file)!r} does not exist")
        token = path.read_text()
    if token is None and os.environ.get("RAY_AUTH_TOKEN"):
        token = os.environ["RAY_AUTH_TOKEN"]
    if token is None:
        for candidate in (os.environ.get("RAY_AUTH_TOKEN_PATH"), Path.home() / ".ray" / "auth_token"):
            if candidate and Path(candidate).is_file():
                token = Path(candidate).read_text()
                break
    if token is None:
        return None
    token = token.strip()
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise InvalidInput("the Ray auth token must be one line of printable characters without spaces")
    return token
