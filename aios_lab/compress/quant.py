"""Compression methods as pure functions over parameter pytrees (numpy in, numpy out).

Methods (combine with ``+``; pruning is applied first):

- ``int8``: symmetric, per output channel (the last axis), weight-only; q in [-127, 127].
- ``int4`` / ``int4:G``: symmetric, G weights (64 by default, or 32/128/256) along the fan-in share a
  scale per output channel; q in [-7, 7], two values packed per byte.
- ``bf16``: a round-to-nearest-even cast of the weights to bfloat16.
- ``prune:F``: magnitude pruning of each weight tensor to sparsity F (0 < F < 1); stored as a bitmask
  plus the packed surviving values, so the saving is real on disk and in memory.

Only floating-point tensors with two or more axes (dense and conv kernels, embeddings) are compressed;
biases and normalisation parameters (one axis) stay as they are. A *layout* (``compress_params(...,
layout=fn)``) can say that a tensor's leading axes stack independent tensors (a language model's layers
``[L, in, out]``: scales, int4 groups and pruning thresholds then go per slice, and a stacked norm
``[L, D]`` counts as one axis) and which axis holds the output channels (an embedding's rows). Scales are
float16 when every scale fits float16's normal range, float32 otherwise. A tensor that cannot be compressed
(not floating point, or holding NaN/inf) stays in float and is named in ``info["kept_float"]``.

A compressed tensor is a :class:`QTensor`, a JAX pytree node whose leaves stay int8/uint8/bf16, so a
jitted function can take it as an argument and dequantise inside the trace (see ``qmodel``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from ..errors import InvalidInput

GROUPS = (32, 64, 128, 256)
DEFAULT_GROUP = 64
QUANTISERS = ("int8", "int4", "bf16")
F16_MIN, F16_MAX = float(np.finfo(np.float16).tiny), float(np.finfo(np.float16).max)
METHOD_HELP = "int8, int4, int4:128, bf16, prune:F with 0 < F < 1, or a combination such as prune:0.5+int8"


# -- methods ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    """A parsed compression method: an optional quantiser and an optional pruning fraction."""

    quant: str | None = None  # "int8" | "int4" | "bf16" | None
    prune: float | None = None
    group: int = DEFAULT_GROUP  # int4 only

    @property
    def name(self) -> str:
        """The canonical spelling, e.g. ``prune:0.5+int8`` or ``int4:128``."""
        parts = []
        if self.prune is not None:
            parts.append(f"prune:{self.prune:g}")
        if self.quant == "int4" and self.group != DEFAULT_GROUP:
            parts.append(f"int4:{self.group}")
        elif self.quant:
            parts.append(self.quant)
        return "+".join(parts)

    @property
    def variant(self) -> str:
        """The variant's name (a valid object name): ``prune-0.5-int8``, ``int4-128``, ``int8``."""
        return self.name.replace(":", "-").replace("+", "-")

    def __str__(self) -> str:
        return self.name


def parse_method(method: str | Method) -> Method:
    """``"prune:0.5+int8"`` -> Method(quant="int8", prune=0.5); a one-line InvalidInput for anything else."""
    if isinstance(method, Method):
        return method
    if not isinstance(method, str) or not method.strip():
        raise InvalidInput(f"no compression method given; use {METHOD_HELP}")
    quant, prune, group = None, None, DEFAULT_GROUP
    for part in method.strip().lower().split("+"):
        part = part.strip()
        m = re.fullmatch(r"(int8|bf16|int4(?::(\d+))?|prune(?::(.*))?)", part)
        if not m:
            raise InvalidInput(f"unknown compression method {part!r}; use {METHOD_HELP}")
        if part.startswith("prune"):
            if prune is not None:
                raise InvalidInput(f"method {method!r} prunes twice; give prune:F once")
            try:
                prune = float(m.group(3)) if m.group(3) else math.nan
            except ValueError:
                prune = math.nan
            if not 0.0 < prune < 1.0:
                raise InvalidInput(
                    f"pruning fraction in {part!r} must be a number strictly between 0 and 1, e.g. prune:0.5"
                )
            continue
        if quant is not None:
            raise InvalidInput(f"method {method!r} names two quantisers ({quant}, {part}); pick one")
        quant = part.split(":")[0]
        if m.group(2):
            group = int(m.group(2))
            if group not in GROUPS:
                raise InvalidInput(f"int4 group size {group}: use one of {', '.join(map(str, GROUPS))}")
    return Method(quant, prune, group)


# -- the compressed tensor --------------------------------------------------------------------------
@jax.tree_util.register_pytree_node_class
class QTensor:
    """A compressed weight: stored values (+ scales, + a bitmask when pruned) and how to expand them.

    The tensor is seen as ``[S, R, C]``: S the product of its ``stack`` leading axes (independent tensors,
    e.g. stacked layers; 1 when there are none), C its channel ``axis`` (moved last), R the rest. Values are
    kept in that order (the tensor's own layout when the channel axis is the last one).
    ``data``: int8 (int8), uint8 packed pairs (int4), bfloat16 (bf16) or the original float (prune only);
    dense tensors keep their shape (int4: flat), pruned ones hold only the kept values, flat.
    ``scale``: float16/float32, ``[*stack, C]`` (int8) or ``[*stack, ceil(R/G), C]`` (int4).
    ``mask``: ``np.packbits`` of the flat keep-mask, or None.
    """

    def __init__(self, data, scale, mask, shape, dtype, kind, group, stack=0, axis=-1):
        self.data, self.scale, self.mask = data, scale, mask
        self.shape, self.dtype, self.kind, self.group = tuple(shape), str(dtype), kind, int(group)
        self.stack, self.axis = int(stack), int(axis)

    def tree_flatten(self):
        aux = (self.shape, self.dtype, self.kind, self.group, self.stack, self.axis)
        return (self.data, self.scale, self.mask), aux

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)

    @property
    def arrays(self) -> dict[str, Any]:
        return {k: v for k, v in (("q", self.data), ("scale", self.scale), ("mask", self.mask)) if v is not None}

    @property
    def nbytes(self) -> int:
        return int(sum(np.dtype(v.dtype).itemsize * int(np.prod(v.shape)) for v in self.arrays.values()))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def meta(self) -> dict[str, Any]:
        meta = {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "kind": self.kind,
            "group": self.group,
            "pruned": self.mask is not None,
        }
        if self.stack or self.axis % len(self.shape) != len(self.shape) - 1:  # only where not the default
            meta.update(stack=self.stack, axis=self.axis)
        return meta

    def dequantize(self, xp: Any = jnp) -> Any:
        """The dense tensor. With ``xp=jnp`` this traces into the caller's jit (nothing expands before)."""
        s, r, c, moved, axis = _slices(self.shape, self.stack, self.axis)
        n = self.size
        vals = self.data.reshape(-1)
        if self.kind == "int4":
            vals = unpack_int4(vals, xp)
        if self.mask is not None:
            keep = xp.unpackbits(self.mask)[:n].astype(bool)
            idx = xp.maximum(xp.cumsum(keep.astype(xp.int32)) - 1, 0)
            dense = xp.where(keep, vals[idx], xp.zeros((), vals.dtype))
        else:
            dense = vals[:n]
        dense = dense.reshape(s, r, c).astype(xp.float32)
        if self.kind == "int8":
            dense = dense * self.scale.astype(xp.float32).reshape(s, 1, c)
        elif self.kind == "int4":
            dense = dense * xp.repeat(self.scale.astype(xp.float32).reshape(s, -1, c), self.group, axis=1)[:, :r]
        dense = dense.reshape(moved)
        if axis != len(self.shape) - 1:
            dense = xp.moveaxis(dense, -1, axis)
        return dense.astype(self.dtype)

    def __repr__(self) -> str:
        try:
            size = f", {self.nbytes} bytes"
        except (AttributeError, TypeError):  # leaves replaced by something else (tree_map)
            size = ""
        return f"QTensor({self.kind}{'+pruned' if self.mask is not None else ''}, shape={self.shape}{size})"


def is_q(x: Any) -> bool:
    return isinstance(x, QTensor)


def _slices(shape: tuple, stack: int, axis: int) -> tuple[int, int, int, tuple, int]:
    """``(S, R, C, moved shape, channel axis)`` of a tensor seen as ``[S, R, C]`` (see :class:`QTensor`)."""
    axis = axis % len(shape)
    if not 0 <= stack <= axis:
        raise ValueError(f"the channel axis {axis} of a tensor shaped {shape} lies among its {stack} stacked axes")
    moved = tuple(d for i, d in enumerate(shape) if i != axis) + (shape[axis],)
    s, c = int(np.prod(shape[:stack], dtype=np.int64)), int(shape[axis])
    return s, int(np.prod(shape, dtype=np.int64)) // max(1, s * c), c, moved, axis


def _as_slices(w: np.ndarray, stack: int, axis: int) -> np.ndarray:
    """``w`` as float64 ``[S, R, C]`` (channel axis last)."""
    s, r, c, _, axis = _slices(np.shape(w), stack, axis)
    return np.moveaxis(np.asarray(w, np.float64), axis, -1).reshape(s, r, c)


def unpack_int4(packed: Any, xp: Any = jnp) -> Any:
    """uint8 bytes -> int8 values in [-8, 7]: low nibble first, then high nibble."""
    lo = (packed & 0x0F).astype(xp.int8)
    hi = (packed >> 4).astype(xp.int8)
    lo = xp.where(lo > 7, lo - 16, lo).astype(xp.int8)
    hi = xp.where(hi > 7, hi - 16, hi).astype(xp.int8)
    return xp.stack([lo, hi], axis=-1).reshape(-1)


def pack_int4(q: np.ndarray) -> np.ndarray:
    """int values in [-8, 7], flat -> uint8 bytes, two per byte (low nibble first); odd length pads a 0."""
    q = np.asarray(q, np.int8).reshape(-1)
    if q.size % 2:
        q = np.concatenate([q, np.zeros(1, np.int8)])
    u = (q.astype(np.int16) & 0x0F).astype(np.uint8)
    return (u[0::2] | (u[1::2] << 4)).astype(np.uint8)


# -- per-tensor methods (float64 inside, exact and deterministic) -----------------------------------
def _scale_dtype(scale: np.ndarray) -> np.dtype:
    nz = scale[scale > 0]
    if nz.size == 0 or (nz.min() >= F16_MIN and nz.max() <= F16_MAX):
        return np.dtype(np.float16)
    return np.dtype(np.float32)


def _stored_scale(amax: np.ndarray, qmax: int) -> np.ndarray:
    """amax/qmax rounded to the stored dtype (all-zero channels get scale 1: they quantise to 0)."""
    scale = np.where(amax > 0, amax / qmax, 1.0)
    return scale.astype(_scale_dtype(scale))


def prune_mask(w: np.ndarray, fraction: float, stack: int = 0) -> np.ndarray:
    """Keep-mask zeroing the ``round(fraction * n)`` smallest magnitudes of each of the ``stack`` leading
    axes' slices (the whole tensor when ``stack`` is 0; ties: the earlier index goes)."""
    shape = np.shape(w)
    s = int(np.prod(shape[:stack], dtype=np.int64))
    flat = np.abs(np.asarray(w, np.float64)).reshape(s, -1)
    k = min(int(round(fraction * flat.shape[1])), flat.shape[1] - 1)
    keep = np.ones(flat.shape, bool)
    np.put_along_axis(keep, np.argsort(flat, axis=1, kind="stable")[:, :k], False, axis=1)
    return keep.reshape(shape)


def _kept(q: np.ndarray, keep: np.ndarray | None, stack: int, axis: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Values in slice order (flat, only the kept ones when pruned) and the packed keep-mask."""
    if keep is None:
        return q.reshape(-1), None
    flat_keep = _as_slices(keep, stack, axis).reshape(-1) > 0
    return q.reshape(-1)[flat_keep], np.packbits(flat_keep)


def _scale_shape(shape: tuple, stack: int, tail: tuple) -> tuple:
    return (*shape[:stack], *tail)


def quantize_int8(w: np.ndarray, keep: np.ndarray | None = None, stack: int = 0, axis: int = -1) -> QTensor:
    """Symmetric per-output-channel int8 of ``w``, per slice of its ``stack`` leading axes (pruned entries,
    if ``keep`` is given, dropped)."""
    shape = np.shape(w)
    _, _, c, moved, _ = _slices(shape, stack, axis)
    w3 = _as_slices(w, stack, axis)
    if keep is not None:
        w3 = np.where(_as_slices(keep, stack, axis) > 0, w3, 0.0)
    scale = _stored_scale(np.abs(w3).max(axis=1), 127)
    q = np.clip(np.rint(w3 / scale.astype(np.float64)[:, None, :]), -127, 127).astype(np.int8)
    scale = scale.reshape(_scale_shape(shape, stack, (c,)))
    if keep is None:
        return QTensor(q.reshape(moved), scale, None, shape, np.asarray(w).dtype, "int8", 0, stack, axis)
    vals, mask = _kept(q, keep, stack, axis)
    return QTensor(vals, scale, mask, shape, np.asarray(w).dtype, "int8", 0, stack, axis)


def quantize_int4(
    w: np.ndarray, group: int = DEFAULT_GROUP, keep: np.ndarray | None = None, stack: int = 0, axis: int = -1
) -> QTensor:
    """Symmetric int4, one scale per ``group`` rows of the fan-in per output channel (within each slice of
    the ``stack`` leading axes), packed two per byte."""
    shape = np.shape(w)
    w3 = _as_slices(w, stack, axis)
    if keep is not None:
        w3 = np.where(_as_slices(keep, stack, axis) > 0, w3, 0.0)
    s, r, c = w3.shape
    n_groups = -(-r // group)
    padded = np.zeros((s, n_groups * group, c))
    padded[:, :r] = np.abs(w3)
    scale = _stored_scale(padded.reshape(s, n_groups, group, c).max(axis=2), 7)
    per_row = np.repeat(scale.astype(np.float64), group, axis=1)[:, :r]
    q = np.clip(np.rint(w3 / per_row), -7, 7).astype(np.int8)
    vals, mask = _kept(q, keep, stack, axis)
    scale = scale.reshape(_scale_shape(shape, stack, (n_groups, c)))
    return QTensor(pack_int4(vals), scale, mask, shape, np.asarray(w).dtype, "int4", group, stack, axis)


def cast_bf16(w: np.ndarray, keep: np.ndarray | None = None, stack: int = 0, axis: int = -1) -> QTensor:
    """Round-to-nearest-even bfloat16 copy of ``w``."""
    w = np.asarray(w)
    _, _, _, moved, ax = _slices(w.shape, stack, axis)
    b = np.moveaxis(w, ax, -1).astype(ml_dtypes.bfloat16)
    if keep is None:
        return QTensor(b.reshape(moved), None, None, w.shape, w.dtype, "bf16", 0, stack, axis)
    vals, mask = _kept(b, keep, stack, axis)
    return QTensor(vals, None, mask, w.shape, w.dtype, "bf16", 0, stack, axis)


def prune_only(w: np.ndarray, keep: np.ndarray, stack: int = 0, axis: int = -1) -> QTensor:
    w = np.asarray(w)
    _, _, _, _, ax = _slices(w.shape, stack, axis)
    vals, mask = _kept(np.moveaxis(w, ax, -1), keep, stack, axis)
    return QTensor(vals.copy(), None, mask, w.shape, w.dtype, "float", 0, stack, axis)


def compress_tensor(w: np.ndarray, method: Method, stack: int = 0, axis: int = -1) -> QTensor:
    """``w`` compressed by ``method``; ``stack`` leading axes hold independent tensors, ``axis`` the channels."""
    keep = prune_mask(w, method.prune, stack) if method.prune is not None else None
    if method.quant == "int8":
        return quantize_int8(w, keep, stack, axis)
    if method.quant == "int4":
        return quantize_int4(w, method.group, keep, stack, axis)
    if method.quant == "bf16":
        return cast_bf16(w, keep, stack, axis)
    return prune_only(w, keep, stack, axis)


# -- whole pytrees ----------------------------------------------------------------------------------
def leaf_paths(tree: Any) -> list[tuple[str, Any]]:
    """``[("params/Dense_0/kernel", leaf), ...]`` with QTensors as leaves."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_q)
    return [(_path(path), leaf) for path, leaf in flat]


def _path(keys: Any) -> str:
    """A key path as ``params/Dense_0/kernel``."""
    return "/".join(next((str(getattr(k, a)) for a in ("key", "idx", "name") if hasattr(k, a)), str(k)) for k in keys)


Layout = Callable[[str, tuple], tuple[int, int]]  # (path, shape) -> (stacked leading axes, channel axis)


def compress_params(params: Any, method: str | Method, layout: Layout | None = None) -> tuple[Any, dict[str, Any]]:
    """Compress every weight tensor of ``params`` by ``method``; returns ``(tree, info)``.

    ``layout(path, shape) -> (stack, axis)`` says, per tensor, how many leading axes stack independent
    tensors (each slice gets its own scales and pruning threshold, and only the axes after them count
    towards "two or more") and which axis holds the output channels (default: none stacked, the last).
    ``info``: method, bytes before/after (all parameters, and the weight tensors alone), per-tensor rows,
    and ``kept_float``: ``[{"path", "reason"}]`` for weights that could not be compressed.
    """
    method = parse_method(method)
    info: dict[str, Any] = {
        "method": method.name,
        "tensors": [],
        "kept_float": [],
        "bytes_before": 0,
        "bytes_after": 0,
        "weight_bytes_before": 0,
        "weight_bytes_after": 0,
    }

    def one(path: str, leaf: Any) -> Any:
        a = np.asarray(leaf)
        info["bytes_before"] += a.nbytes
        out: Any = a
        stack, axis = layout(path, a.shape) if layout is not None else (0, -1)
        if a.ndim - stack >= 2 and a.size:
            info["weight_bytes_before"] += a.nbytes
            reason = None
            if not np.issubdtype(a.dtype, np.floating):
                reason = f"dtype {a.dtype} is not floating point"
            elif not np.isfinite(a).all():
                reason = "holds NaN or inf values"
            if reason:
                info["kept_float"].append({"path": path, "reason": reason})
            else:
                out = compress_tensor(a, method, stack, axis)
                info["tensors"].append(
                    {
                        "path": path,
                        "shape": list(a.shape),
                        "kind": out.kind,
                        "bytes_before": a.nbytes,
                        "bytes_after": out.nbytes,
                    }
                )
            info["weight_bytes_after"] += out.nbytes if is_q(out) else a.nbytes
        info["bytes_after"] += out.nbytes if is_q(out) else a.nbytes
        return out

    flat, treedef = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_q)
    tree = jax.tree_util.tree_unflatten(treedef, [one(_path(path), leaf) for path, leaf in flat])
    info["ratio"] = info["bytes_before"] / max(1, info["bytes_after"])
    info["weight_ratio"] = info["weight_bytes_before"] / max(1, info["weight_bytes_after"])
    return tree, info


def dequantize_params(tree: Any, xp: Any = jnp) -> Any:
    """Every QTensor expanded to its dense float tensor (inside jit when ``xp`` is ``jnp``)."""
    return jax.tree_util.tree_map(lambda v: v.dequantize(xp) if is_q(v) else v, tree, is_leaf=is_q)


__all__ = [
    "Method",
    "QTensor",
    "parse_method",
    "compress_params",
    "compress_tensor",
    "dequantize_params",
    "quantize_int8",
    "quantize_int4",
    "cast_bf16",
    "prune_mask",
    "pack_int4",
    "unpack_int4",
    "leaf_paths",
    "is_q",
    "Layout",
    "METHOD_HELP",
]
