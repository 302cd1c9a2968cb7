"""The Ray cluster this AIOS_HOME is connected to: ``AIOS_HOME/cluster/`` (0700) holds 0600 files.

``target.json``: address, auth mode, the cluster's Ray version, when it was connected. ``token``: a
copy of the cluster's Ray auth token (so detached supervisors find it whatever their HOME).
``nodes.json``: the last look at the nodes (reads such as ``aios.devices()`` show it without
starting a process). Nothing here is shared with other hosts.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import config
from ..errors import AiosError, InvalidInput

NO_CLUSTER = "no Ray cluster connected; `%aios cluster connect HOST:PORT` first"


@dataclass(frozen=True)
class Target:
    """Where the cluster is and how to authenticate to it."""

    address: str  # the head's GCS address HOST:PORT
    auth: str  # "token" | "none"
    ray_version: str
    connected: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def folder() -> Path:
    return config.private_dir(config.area("cluster"))


def token_path() -> Path:
    return config.area("cluster", "token")


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> (host, port); anything else is a one-line error."""
    text = (address or "").strip()
    if text.startswith("ray://"):
        raise InvalidInput(
            f"{address!r} is a Ray Client address; give the head's HOST:PORT (what `ray start --head` printed)"
        )
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c.isspace() for c in text):
        raise InvalidInput(f"bad cluster address {address!r}; give the Ray head's HOST:PORT, e.g. 10.0.0.5:6379")
    return host, int(port)


def load() -> Target | None:
    """The connected cluster, or None."""
    path = config.area("cluster", "target.json")
    if not path.exists():
        return None
    return Target(**json.loads(path.read_text()))


def require() -> Target:
    """The connected cluster, or a one-line error saying how to connect one."""
    target = load()
    if target is None:
        raise AiosError(NO_CLUSTER)
    return target


def save(target: Target, token: str | None, nodes: dict[str, Any]) -> None:
    """Store the target, its token and the nodes snapshot (each file written whole, then renamed)."""
    d = folder()
    if token is not None:
        _write(d / "token", token.strip() + "\n")
    else:
        (d / "token").unlink(missing_ok=True)
    save_nodes(nodes)
    _write(d / "target.json", json.dumps(target.to_json(), indent=1))


def save_nodes(nodes: dict[str, Any]) -> None:
    """Keep the latest look at the nodes (``{"checked": t, "nodes": [...]}``)."""
    _write(folder() / "nodes.json", json.dumps({**nodes, "checked": time.time()}))


def load_nodes() -> dict[str, Any] | None:
    path = config.area("cluster", "nodes.json")
    return json.loads(path.read_text()) if path.exists() else None


def load_reached(max_age: float) -> list[list[Any]]:
    """Keys of reach checks (``reach.key``) that passed within the last ``max_age`` seconds."""
    path = config.area("cluster", "reached.json")
    entries = json.loads(path.read_text()) if path.exists() else []
    return [e["key"] for e in entries if time.time() - e["time"] < max_age]


def save_reached(key: list[Any], max_age: float) -> None:
    """Remember that the reach check ``key`` passed now (older entries are dropped)."""
    path = config.area("cluster", "reached.json")
    entries = json.loads(path.read_text()) if path.exists() else []
    entries = [e for e in entries if time.time() - e["time"] < max_age and e["key"] != key]
    _write(folder() / "reached.json", json.dumps([*entries, {"key": key, "time": time.time()}]))


def remove() -> bool:
    """Forget the cluster (target, token, snapshot, passed checks); True if one was connected."""
    had = load() is not None
    for name in ("target.json", "token", "nodes.json", "reached.json"):
        config.area("cluster", name).unlink(missing_ok=True)
    return had


def ray_env(auth: str, token_file: Path | None) -> dict[str, str]:
    """The environment a Ray driver (probe, supervisor) of this cluster needs for authentication."""
    if auth == "token":
        if token_file is None or not token_file.exists():
            raise AiosError("the cluster's Ray auth token is missing; `%aios cluster connect ADDRESS --token-file F`")
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
    return {"RAY_AUTH_MODE": "disabled"}


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with config.open_private(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
