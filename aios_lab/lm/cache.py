"""The preallocated KV cache: a fixed number of slots, each holding one sequence's keys and values by position.

Per layer, keys and values are ``[slots, kv_heads, max_len, head_dim]`` (heads-major: attention reads
them without a transpose). They are stacked ``[L, ...]`` for stacked parameters (the layer scan writes
its own row in place) or kept as a tuple of per-layer arrays for unstacked ones (no per-step slicing).
A slot's entry ``t`` holds the token at position ``t``; attention masks out everything past a slot's
current position, so a slot is reused by simply prefilling it again.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .config import LMConfig


class KVCache(NamedTuple):
    """Keys and values: ``[L, S, KV, M, hd]`` arrays, or tuples of L ``[S, KV, M, hd]`` arrays (a pytree:
    pass it through jit, donate it)."""

    k: Any
    v: Any

    @property
    def per_layer(self) -> bool:
        return isinstance(self.k, (list, tuple))

    @property
    def _shape(self) -> tuple[int, ...]:
        """One layer's ``(S, KV, M, hd)``."""
        return tuple(self.k[0].shape) if self.per_layer else tuple(self.k.shape[1:])

    @property
    def dtype(self) -> Any:
        return self.k[0].dtype if self.per_layer else self.k.dtype

    @property
    def slots(self) -> int:
        return int(self._shape[0])

    @property
    def max_len(self) -> int:
        return int(self._shape[2])

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in jax.tree.leaves(self)))

    def layer(self, i: Any) -> tuple[jax.Array, jax.Array]:
        """Layer ``i``'s keys and values ``[S, KV, M, hd]`` (``i`` traced under a scan, an int when unrolled)."""
        return self.k[i], self.v[i]

    def write(self, i: Any, rows: jax.Array, cols: jax.Array, k: jax.Array, v: jax.Array) -> KVCache:
        """Store ``k``/``v`` ``[*idx, KV, hd]`` at slots ``rows`` and positions ``cols`` (broadcast together)."""
        k, v = k.astype(self.dtype), v.astype(self.dtype)
        if self.per_layer:
            ks, vs = list(self.k), list(self.v)
            ks[i] = ks[i].at[rows, :, cols].set(k)
            vs[i] = vs[i].at[rows, :, cols].set(v)
            return KVCache(tuple(ks), tuple(vs))
        return KVCache(self.k.at[i, rows, :, cols].set(k), self.v.at[i, rows, :, cols].set(v))


def new_cache(cfg: LMConfig, slots: int, max_len: int, dtype: Any = jnp.float32, per_layer: bool = False) -> KVCache:
    """An empty cache of ``slots`` sequences of up to ``max_len`` tokens (capped at the model's context);
    ``per_layer`` for unstacked parameters."""
    shape = (slots, cfg.num_kv_heads, min(max_len, cfg.context), cfg.head_dim)
    if per_layer:
        return KVCache(
            tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)),
            tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)),
        )
    full = (cfg.num_layers, *shape)
    return KVCache(jnp.zeros(full, dtype), jnp.zeros(full, dtype))


def cache_for(params: Any, cfg: LMConfig, slots: int, max_len: int) -> KVCache:
    """A cache matching ``params``: their float dtype, per-layer when they are unstacked."""
    leaves = [a for a in jax.tree.leaves(params) if jnp.issubdtype(a.dtype, jnp.floating)]
    dtype = leaves[0].dtype if leaves else jnp.float32
    return new_cache(cfg, slots, max_len, dtype, per_layer=isinstance(params["layers"], (list, tuple)))


def cache_bytes(cfg: LMConfig, slots: int, max_len: int, dtype: Any = jnp.float32) -> int:
    """What :func:`new_cache` would allocate, in bytes."""
    return (
        2
        * cfg.num_layers
        * slots
        * min(max_len, cfg.context)
        * cfg.num_kv_heads
        * cfg.head_dim
        * jnp.dtype(dtype).itemsize
    )


__all__ = ["KVCache", "new_cache", "cache_for", "cache_bytes"]
