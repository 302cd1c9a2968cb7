"""Jitted prefill and decode over a :class:`KVCache`: the pieces a batch generator or a serving engine drives.

- :func:`prefill` writes whole prompts into chosen slots (right-padded ``[B, T]``) and returns each
  prompt's last logits; :func:`prefill_into_slot` does one prompt, padded to a power-of-two bucket.
- :func:`decode_step` feeds one token per slot, each slot at its own position, and returns ``[S, V]``
  logits; inactive slots leave the cache untouched.
- :func:`decode_loop` runs up to ``n`` decode+sample steps on the device (a ``while_loop``), stopping
  rows at eos or their token budget, for throughput without a host round trip per token.

The cache is donated everywhere: pass it in, use the one that comes back. A row's arithmetic never
depends on the other rows (fixed shapes, per-row masks), so a request decodes to the same tokens
whatever else shares the batch.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import AiosError
from . import layers
from .cache import KVCache
from .config import LMConfig
from .model import decoder, embed, head
from .sampling import row_keys, sample


@partial(jax.jit, static_argnames=("cfg",), donate_argnames=("cache",))
def prefill(
    params: Any, cfg: LMConfig, cache: KVCache, tokens: jnp.ndarray, lengths: jnp.ndarray, slots: jnp.ndarray
) -> tuple[KVCache, jnp.ndarray]:
    """Write prompts ``tokens [B, T]`` (right-padded; ``lengths [B]``) into cache ``slots [B]`` from position 0;
    returns the cache and the logits ``[B, V]`` at each prompt's last token."""
    b, t = tokens.shape
    idx = jnp.arange(t, dtype=jnp.int32)
    segments = (idx[None, :] < lengths[:, None]).astype(jnp.int32)  # padding: segment 0, never attended
    positions = jnp.broadcast_to(idx, (b, t))
    full, slide = layers.self_masks(segments, cfg.sliding_window)

    def attend(index, sliding, scale, q, k, v, cache):
        cache = cache.write(index, slots[:, None], idx[None, :], k, v)
        k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)  # heads-major, as attention takes them
        return layers.attention(cfg, q, k, v, layers.pick(cfg, sliding, slide, full), scale), cache

    h, cache = decoder(params, cfg, embed(params, cfg, tokens, positions), positions, attend, cache)
    last = h[jnp.arange(b), jnp.maximum(lengths - 1, 0)]
    return cache, head(params, cfg, last)


@partial(jax.jit, static_argnames=("cfg",), donate_argnames=("cache",))
def decode_step(
    params: Any, cfg: LMConfig, cache: KVCache, tokens: jnp.ndarray, positions: jnp.ndarray, active: jnp.ndarray
) -> tuple[KVCache, jnp.ndarray]:
    """Feed ``tokens [S]`` at ``positions [S]`` (one per slot); returns the cache and logits ``[S, V]``.
    Slots with ``active`` False compute garbage logits and leave the cache as it was."""
    return _decode(params, cfg, cache, tokens, positions, active)


def _decode(params, cfg, cache, tokens, positions, active):
    s = tokens.shape[0]
    rows = jnp.arange(s)
    positions = jnp.clip(positions, 0, cache.max_len - 1).astype(jnp.int32)
    full, slide = layers.cache_masks(positions, cache.max_len, cfg.sliding_window)
    keep = active[:, None, None]

    def attend(index, sliding, scale, q, k, v, cache):
        old_k, old_v = cache.layer(index)
        k_new = jnp.where(keep, k[:, 0].astype(cache.dtype), old_k[rows, :, positions])  # [S, KV, hd]
        v_new = jnp.where(keep, v[:, 0].astype(cache.dtype), old_v[rows, :, positions])
        cache = cache.write(index, rows, positions, k_new, v_new)
        k_all, v_all = cache.layer(index)
        out = layers.attention(
            cfg, q, k_all.astype(q.dtype), v_all.astype(q.dtype), layers.pick(cfg, sliding, slide, full), scale
        )
        return out, cache

    pos = positions[:, None]
    h, cache = decoder(params, cfg, embed(params, cfg, tokens[:, None], pos), pos, attend, cache)
    return cache, head(params, cfg, h[:, 0])


def bucket(n: int, minimum: int = 16) -> int:
    """``n`` rounded up to a power of two (at least ``minimum``): few shapes, few compilations."""
    return max(minimum, 1 << max(0, int(n) - 1).bit_length())


def prefill_into_slot(
    params: Any, cfg: LMConfig, cache: KVCache, slot: int, tokens: Any
) -> tuple[KVCache, jnp.ndarray]:
    """Prefill one prompt into ``slot`` (padded to a bucket); returns the cache and its last logits ``[V]``."""
    tokens = np.asarray(tokens, np.int32).reshape(-1)
    n = len(tokens)
    if n == 0:
        raise AiosError("cannot prefill an empty prompt")
    if n >= cache.max_len:
        raise AiosError(f"prompt of {n} tokens does not fit the cache ({cache.max_len} positions)")
    width = min(bucket(n), cache.max_len)
    padded = np.zeros((1, width), np.int32)
    padded[0, :n] = tokens
    cache, logits = prefill(
        params, cfg, cache, jnp.asarray(padded), jnp.asarray([n], jnp.int32), jnp.asarray([slot], jnp.int32)
    )
    return cache, logits[0]


class DecodeState(NamedTuple):
    """Per-slot state of :func:`decode_loop` (all arrays lead with the slot axis; a pytree)."""

    logits: jax.Array  # [S, V] float32: the next token's logits (from prefill or the last step)
    positions: jax.Array  # int32: where the next sampled token goes
    active: jax.Array  # bool: still generating
    steps: jax.Array  # int32: tokens sampled so far (the next draw's index)
    budget: jax.Array  # int32: the most tokens this row may sample
    seeds: jax.Array  # uint32
    temperature: jax.Array  # float32; 0 = greedy
    top_p: jax.Array  # float32; 1 = off
    top_k: jax.Array  # int32; 0 = off


@partial(jax.jit, static_argnames=("cfg", "n", "sampling"), donate_argnames=("cache",))
def decode_loop(
    params: Any,
    cfg: LMConfig,
    cache: KVCache,
    state: DecodeState,
    eos: jnp.ndarray,
    n: int,
    sampling: bool = True,
    allow: jnp.ndarray | None = None,
) -> tuple[KVCache, DecodeState, jnp.ndarray]:
    """Up to ``n`` sample+decode steps on the device: each samples every active row's next token from
    ``state.logits``, then feeds it. Returns the cache, the state and the tokens ``[S, n]`` sampled (-1
    where a row was inactive). A row stops after an ``eos`` id, at its budget, or at the end of the
    cache; the loop ends early once no row is active. ``sampling=False`` compiles a greedy-only loop
    (every row's temperature must then be 0): smaller, quicker to compile, no sort. ``allow [S]``: rows
    the caller has ended since (a stop string, a cancelled request) are switched off first."""
    out0 = jnp.full((state.positions.shape[0], n), -1, jnp.int32)
    if allow is not None:
        state = state._replace(active=state.active & allow)

    def cond(carry):
        i, _, st, _ = carry
        return (i < n) & jnp.any(st.active)

    def body(carry):
        i, cache, st, out = carry
        if sampling:
            nxt = sample(st.logits, row_keys(st.seeds, st.steps), st.temperature, st.top_p, st.top_k)
        else:
            nxt = jnp.argmax(st.logits, axis=-1).astype(jnp.int32)
        nxt = jnp.where(st.active, nxt, -1)
        out = out.at[:, i].set(nxt)
        steps = st.steps + st.active
        done = jnp.isin(nxt, eos) | (steps >= st.budget) | (st.positions + 1 >= cache.max_len)
        active = st.active & ~done
        cache, logits = _decode(params, cfg, cache, jnp.maximum(nxt, 0), st.positions, active)
        st = st._replace(logits=logits, positions=st.positions + active, steps=steps, active=active)
        return i + 1, cache, st, out

    _, cache, state, out = jax.lax.while_loop(cond, body, (jnp.int32(0), cache, state, out0))
    return cache, state, out


__all__ = ["prefill", "prefill_into_slot", "decode_step", "decode_loop", "DecodeState", "bucket"]
