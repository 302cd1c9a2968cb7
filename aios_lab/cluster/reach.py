"""Does every host reach a job's files? A marker file in the checkpoint directory, and the dataset by path.

A gang writes one checkpoint from every rank and reads one dataset version on every host, and this
machine reads the checkpoints back (``Job.params``, publishing), so both must be one place for all of
them: a shared filesystem path or a ``gs://`` / ``s3://`` URI. At submit, the probe child (on this
machine) writes a marker into the checkpoint directory, then one task pinned to each node that could
hold a rank looks for it and opens the dataset with the expected hash (:func:`check_nodes`). A task
needs a fresh worker process on every node (seconds), so a check that passed is trusted for
``TRUST_S`` for the same places and nodes (``key``). At start, the gang repeats the marker check from
rank 0 (``gang._check_shared``) on the nodes it got.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import AiosError
from .capacity import GangShape, usable

TRUST_S = 600.0  # a passed check holds this long for the same directory, dataset and nodes
TASK_TIMEOUT_S = 300.0  # starting a worker process on each node (a busy node takes long)
SHARE_HINT = "give a shared filesystem path or a gs:// or s3:// URI (--checkpoint-dir)"


class NotShared(AiosError):
    """The checkpoint directory (or the dataset) is not the same place on every host."""


def path(directory: str) -> Any:
    """A local Path, or an etils path for URIs (``gs://``, ``s3://``) as orbax uses."""
    if "://" in directory:
        from etils import epath

        return epath.Path(directory)
    return Path(directory)


def mark(directory: str) -> dict[str, Any]:
    """Write a marker file in ``directory`` (made if missing); returns its name and the folders made."""
    d = path(directory)
    made, p = [], d
    while not p.exists():
        made.append(str(p))
        p = p.parent
    d.mkdir(parents=True, exist_ok=True)
    name = f".aios-shared-{uuid.uuid4().hex}"
    (d / name).write_text(str(os.getpid()))
    return {"name": name, "made": made}


def sees(directory: str, name: str) -> bool:
    """True if this host sees the marker ``name`` that another host wrote in ``directory``."""
    return (path(directory) / name).exists()


def unmark(directory: str, name: str, made: Sequence[str]) -> None:
    """Remove the marker and the folders ``mark`` made (deepest first)."""
    (path(directory) / name).unlink(missing_ok=True)
    for folder in made:
        try:
            path(folder).rmdir()
        except OSError:
            break


def look(directory: str, name: str, dataset_path: str, dataset_hash: str | None) -> dict[str, Any]:
    """On one node: does it see the marker, and can it open the dataset version? (a Ray task's body)"""
    from .datasets import open_version

    host = socket.gethostname()
    try:
        open_version(dataset_path, dataset_hash, where=f"host {host}")
        dataset = None
    except AiosError as exc:
        dataset = str(exc)
    return {"host": host, "sees": sees(directory, name), "dataset": dataset}


def key(
    shape: GangShape, nodes: Sequence[dict[str, Any]], checkpoint_dir: str, dataset_path: str, hash_: str | None
) -> list[Any]:
    """What a passed check vouches for: these places, seen from these nodes."""
    return [checkpoint_dir, dataset_path, hash_, sorted(n["node_id"] for n in usable(shape, nodes))]


def check_nodes(
    ray: Any,
    nodes: Sequence[dict[str, Any]],
    shape: GangShape,
    checkpoint_dir: str,
    dataset_path: str,
    dataset_hash: str | None,
) -> str | None:
    """From this machine: None if every node that could hold a rank sees a marker written here into
    ``checkpoint_dir`` and opens the dataset; else the first problem, as one line."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(look)
    try:
        m = mark(checkpoint_dir)
    except Exception as exc:  # no such bucket, no permission, a file in the way
        why = getattr(exc, "strerror", None) or type(exc).__name__
        return f"cannot write in --checkpoint-dir {checkpoint_dir} from this machine ({why}); {SHARE_HINT}"
    try:
        ok = usable(shape, nodes)
        refs = [
            task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["node_id"], soft=False)).remote(
                checkpoint_dir, m["name"], dataset_path, dataset_hash
            )
            for n in ok
        ]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=TASK_TIMEOUT_S)
        if len(ready) < len(refs):
            return f"the cluster's nodes did not run a check within {TASK_TIMEOUT_S:.0f} s; is the cluster busy?"
        seen = ray.get(refs)
    finally:
        unmark(checkpoint_dir, m["name"], m["made"])
    for n, s in zip(ok, seen):
        where = f"{s['host']} ({n.get('ip')})"
        if not s["sees"]:
            return (
                f"--checkpoint-dir {checkpoint_dir} is not shared: host {where} does not see a file this machine "
                f"wrote there; {SHARE_HINT}"
            )
        if s["dataset"]:
            return s["dataset"]
    return None
