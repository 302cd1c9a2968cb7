"""The device mesh and the sharding rules (dp, fsdp) for params, optimizer state and batches.

The mesh has one axis, "data", of Auto type (GSPMD sharding). dp replicates parameters; fsdp shards
each array along its largest dimension divisible by the device count (replicated where none divides).
Rules are pure functions of shapes, so they work on abstract trees (``jax.eval_shape``) before anything
is allocated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from .config import MODES

AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all) with axis "data" of Auto type (GSPMD sharding works)."""
    devices = list(devices) if devices is not None else jax.devices()
    return Mesh(np.array(devices), (AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Split the leading (batch) dimension across the data axis."""
    return NamedSharding(mesh, P(AXIS))


def fsdp_spec(shape: Sequence[int], n: int) -> P:
    """Shard on the largest dimension divisible by ``n`` (the first such on ties); replicate if none divides."""
    best = None
    for i, d in enumerate(shape):
        if d % n == 0 and d >= n and (best is None or d > shape[best]):
            best = i
    if best is None or n == 1:
        return P()
    return P(*([None] * best + [AXIS]))


def param_shardings(params: Any, mesh: Mesh, mode: str = "dp") -> Any:
    """A NamedSharding per leaf of ``params`` (arrays or ShapeDtypeStructs) under ``mode`` dp|fsdp."""
    if mode not in MODES:
        raise ValueError(f"unknown shard mode {mode!r}; use dp or fsdp")
    n = mesh.shape[AXIS]
    if mode == "dp":
        return jax.tree.map(lambda _: replicated(mesh), params)
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), n)), params)


def opt_state_shardings(tx: optax.GradientTransformation, params: Any, shardings: Any, mesh: Mesh) -> Any:
    """Shardings for ``tx.init(params)``: param-shaped leaves follow the params, the rest is replicated."""
    abstract = jax.eval_shape(tx.init, params)
    return optax.tree_map_params(
        tx, lambda _, s: s, abstract, shardings, transform_non_params=lambda _: replicated(mesh)
    )


def bytes_per_device(tree: Any) -> dict[int, int]:
    """Bytes that each device holds of the arrays in ``tree`` (device id -> bytes)."""
    out: dict[int, int] = {}
    for leaf in jax.tree.leaves(tree):
        for shard in getattr(leaf, "addressable_shards", []):
            out[shard.device.id] = out.get(shard.device.id, 0) + shard.data.nbytes
    return out
