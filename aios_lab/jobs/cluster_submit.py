"""Submitting a cluster job (``aios.train(..., on="ray")``): every check that can refuse it, before any write.

In order, each a one-line error: the flags (``--hosts``/``--devices-per-host`` go with ``--on ray``,
``--devices``/``--processes`` do not), a Ray version aios can drive, a connected cluster, then (after
the dataset and model checks every job gets) a look at the cluster from a child process: it must
answer, be able to hold the gang at all (the message gives its size), and every node that could hold
a rank must see a marker written here into the checkpoint directory and open the dataset version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import Conflict, InvalidInput
from . import limits
from .paths import checkpoint_dir as own_checkpoint_dir

PLACES = ("local", "ray")
URI_SCHEMES = ("gs", "s3")  # what orbax and tensorstore write besides local paths


def place(on: str | None, hosts: Any, devices_per_host: Any, checkpoint_dir: Any) -> str:
    """``"local"`` or ``"ray"``; refuses the gang's flags (``--hosts`` ...) without ``--on ray``."""
    on = on or "local"
    if on not in PLACES:
        raise InvalidInput(f"--on must be local or ray, not {on!r}")
    if on == "local" and (hosts, devices_per_host, checkpoint_dir) != (None, None, None):
        raise InvalidInput("--hosts, --devices-per-host and --checkpoint-dir go with --on ray")
    return on


def shape(hosts: Any, devices_per_host: Any, devices: Any, processes: Any) -> Any:
    """The gang asked for, checked against the connected cluster's last look for its device kind."""
    from ..cluster import capacity, target
    from ..cluster.ray_support import require_ray

    if devices not in (None, "all"):
        raise InvalidInput("--devices is for local jobs; a gang takes --devices-per-host K on each of --hosts H")
    if processes is not None:
        raise InvalidInput("--processes is for local jobs; a gang runs one process per host (--hosts)")
    if hosts is None or devices_per_host is None:
        raise InvalidInput("--on ray needs --hosts H and --devices-per-host K")
    h = limits.check("hosts", hosts)
    k = limits.check("devices_per_host", devices_per_host)
    require_ray()
    target.require()
    return capacity.GangShape(h, k, kind=_kind((target.load_nodes() or {}).get("nodes", [])))


def _kind(nodes: list[dict[str, Any]]) -> str:
    """GPUs if a live node has them, else TPUs, else forced XLA host devices on CPUs."""
    for kind, key in (("gpu", "GPU"), ("tpu", "TPU")):
        if any(n["alive"] and n["resources"].get(key) for n in nodes):
            return kind
    return "cpu"


def checkpoints(name: str, given: str | None) -> tuple[str, str]:
    """``(root, directory)``: the job's checkpoints go to ``DIR/JOB`` under ``--checkpoint-dir``, else to its
    own folder here (under the root ``AIOS_HOME/jobs``)."""
    if not given:
        own = own_checkpoint_dir(name)
        return str(own.parent.parent), str(own)
    given = str(given).strip()
    scheme, sep, rest = given.partition("://")
    if sep:
        if scheme not in URI_SCHEMES or not rest.strip("/"):
            raise InvalidInput(f"--checkpoint-dir {given!r}: give a path, or a gs:// or s3:// URI")
        return given.rstrip("/"), f"{given.rstrip('/')}/{name}"
    root = Path(given).expanduser().absolute()
    if (root / name).is_dir() and any((root / name).iterdir()):
        raise Conflict(f"{root / name} already holds files; pick another --checkpoint-dir or job name")
    return str(root), str(root / name)


def check(name: str, gang: Any, checkpoint_dir: str | None, ds: Any) -> dict[str, Any]:
    """Look at the cluster now (one-line errors); returns what the job's config records for the gang."""
    from ..cluster.api import check_gang

    root, where = checkpoints(name, checkpoint_dir)
    check_gang(gang, root, str(ds.path), ds.hash)
    return {
        "on": "ray",
        "gang": dict(gang.__dict__),
        "checkpoint_dir": where,
        "dataset_path": str(ds.path),
        "dataset_hash": ds.hash,
    }


__all__ = ["PLACES", "check", "checkpoints", "place", "shape"]
