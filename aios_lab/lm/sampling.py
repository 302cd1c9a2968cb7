"""Next-token choice per row: greedy, or temperature + top-k + top-p sampling with a per-row key.

A row's key is ``fold_in(key(seed), step)``: its own seed and its own token index, never its place
in the batch, so a request samples the same tokens alone or among others. Every setting is a per-row
array, so one compiled step serves rows with different settings.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def row_keys(seeds: jnp.ndarray, steps: jnp.ndarray) -> jax.Array:
    """One PRNG key per row from its seed ``[S]`` (uint32) and the index ``[S]`` of the token being drawn."""
    return jax.vmap(lambda s, t: jax.random.fold_in(jax.random.key(s), t))(
        seeds.astype(jnp.uint32), steps.astype(jnp.uint32)
    )


def _filtered(logits: jnp.ndarray, temperature: jnp.ndarray, top_p: jnp.ndarray, top_k: jnp.ndarray) -> jnp.ndarray:
    """Logits divided by temperature, with everything outside top-k, then outside the top-p mass, set to -inf."""
    v = logits.shape[-1]
    x = logits / jnp.maximum(temperature, 1e-6)[:, None]
    ordered = -jnp.sort(-x, axis=-1)  # descending
    k = jnp.where(top_k > 0, jnp.minimum(top_k, v), v)
    rank = jnp.arange(v)[None, :]
    ordered = jnp.where(rank < k[:, None], ordered, -jnp.inf)
    probs = jax.nn.softmax(ordered, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each candidate
    keep = (before < top_p[:, None]) | (rank == 0)
    cutoff = jnp.min(jnp.where(keep, ordered, jnp.inf), axis=-1)
    return jnp.where(x >= cutoff[:, None], x, -jnp.inf)


def sample(
    logits: jnp.ndarray, keys: jax.Array, temperature: jnp.ndarray, top_p: jnp.ndarray, top_k: jnp.ndarray
) -> jnp.ndarray:
    """Token ids ``[S]`` from ``logits [S, V]``: argmax where ``temperature`` is 0, else a draw from the
    temperature-scaled distribution cut to ``top_k`` (0 = off) and ``top_p`` (1.0 = off)."""
    logits = logits.astype(jnp.float32)
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def draw(_):
        x = _filtered(logits, temperature, top_p, top_k)
        drawn = jax.vmap(jax.random.categorical)(keys, x).astype(jnp.int32)
        return jnp.where(temperature > 0, drawn, greedy)

    return jax.lax.cond(jnp.any(temperature > 0), draw, lambda _: greedy, None)


__all__ = ["row_keys", "sample"]
