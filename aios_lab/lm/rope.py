"""Rotary position embeddings: inverse frequencies (default, linear, Llama 3 scaling) and their application.

Frequencies are computed in float32 the way transformers computes them, so angles agree to the last bit
that matters for 1e-4 logits parity; rotation uses the "rotate half" layout of Hugging Face weights.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from .config import Rope


def inv_freq(rope: Rope, head_dim: int) -> np.ndarray:
    """The ``head_dim // 2`` inverse frequencies of ``rope`` (float32)."""
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    freq = (np.float32(1.0) / np.power(np.float32(rope.theta), exponent)).astype(np.float32)
    if rope.kind == "linear":
        return (freq / np.float32(rope.factor)).astype(np.float32)
    if rope.kind == "llama3":
        return _llama3(freq, rope)
    return freq


def _llama3(freq: np.ndarray, rope: Rope) -> np.ndarray:
    """Llama 3.x scaling: long wavelengths divided by ``factor``, short ones kept, a smooth blend between."""
    low_wavelen = rope.original_context / rope.low_freq_factor
    high_wavelen = rope.original_context / rope.high_freq_factor
    wavelen = (np.float32(2 * math.pi) / freq).astype(np.float32)
    scaled = np.where(wavelen > low_wavelen, freq / np.float32(rope.factor), freq).astype(np.float32)
    smooth = (
        (rope.original_context / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
    ).astype(np.float32)
    smoothed = ((1 - smooth) * scaled / np.float32(rope.factor) + smooth * scaled).astype(np.float32)
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def cos_sin(rope: Rope, head_dim: int, positions: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """cos and sin ``[..., head_dim]`` (float32) for integer ``positions`` of any shape."""
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq(rope, head_dim))
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """Rotate ``x [B, T, heads, head_dim]`` by ``cos/sin [B, T, head_dim]`` (computed in float32)."""
    half = x.shape[-1] // 2
    xf = x.astype(jnp.float32)
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    out = xf * cos[:, :, None, :] + rotated * sin[:, :, None, :]
    return out.astype(x.dtype)


__all__ = ["inv_freq", "cos_sin", "apply"]
