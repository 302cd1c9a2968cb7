"""The pieces of a decoder layer as pure functions: norms, dense, MLP, attention masks and attention.

Each follows the Hugging Face reference maths (norm statistics and softmax in float32) so that fp32
logits agree with transformers to ~1e-5, and works unchanged on bf16 parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .config import LMConfig

NEG = float(jnp.finfo(jnp.float32).min)


def norm(cfg: LMConfig, p: dict, x: jnp.ndarray) -> jnp.ndarray:
    """RMSNorm (Llama/Qwen: ``w * x̂``; Gemma: ``(1 + w) * x̂``) or GPT-2's LayerNorm with bias, over the last axis."""
    xf = x.astype(jnp.float32)
    if cfg.norm == "layer":
        mean = xf.mean(-1, keepdims=True)
        var = jnp.square(xf - mean).mean(-1, keepdims=True)
        out = (xf - mean) * jax.lax.rsqrt(var + cfg.norm_eps)
        return (out * p["scale"].astype(jnp.float32) + p["bias"].astype(jnp.float32)).astype(x.dtype)
    normed = xf * jax.lax.rsqrt(jnp.square(xf).mean(-1, keepdims=True) + cfg.norm_eps)
    if cfg.norm_offset:
        return (normed * (cfg.norm_offset + p["scale"].astype(jnp.float32))).astype(x.dtype)
    return p["scale"].astype(x.dtype) * normed.astype(x.dtype)


def dense(p: dict, x: jnp.ndarray) -> jnp.ndarray:
    """``x @ kernel (+ bias)``; kernels are laid out ``[in, out]``.

    Two optional keys beside the kernel (a frozen base under LoRA training): ``kernel_scale [out]`` makes
    ``kernel`` int8 with per-output-channel scales (dequantised here, in the compute dtype), and
    ``lora_a [in, r]`` / ``lora_b [r, out]`` add the low-rank update ``x @ lora_a @ lora_b`` (``lora_b``
    carries the alpha / r scale) without ever forming the merged matrix."""
    y = jnp.einsum("...i,io->...o", x, p["kernel"].astype(x.dtype))
    if "kernel_scale" in p:
        y = y * p["kernel_scale"].astype(y.dtype)
    if "lora_a" in p:
        low = jnp.einsum("...i,ir->...r", x, p["lora_a"].astype(x.dtype))
        y = y + jnp.einsum("...r,ro->...o", low, p["lora_b"].astype(x.dtype))
    return y + p["bias"].astype(y.dtype) if "bias" in p else y


def activation(cfg: LMConfig, x: jnp.ndarray) -> jnp.ndarray:
    if cfg.activation == "silu":
        return jax.nn.silu(x)
    if cfg.activation == "gelu_tanh":
        return jax.nn.gelu(x, approximate=True)
    if cfg.activation == "gelu":
        return jax.nn.gelu(x, approximate=False)
    return jax.nn.relu(x)


def mlp(cfg: LMConfig, p: dict, x: jnp.ndarray) -> jnp.ndarray:
    """Gated (``down(act(gate x) * up x)``) or plain (``down(act(up x))``) feed-forward."""
    if cfg.gated_mlp:
        return dense(p["down"], activation(cfg, dense(p["gate"], x)) * dense(p["up"], x))
    return dense(p["down"], activation(cfg, dense(p["up"], x)))


def segment_positions(segment_ids: jnp.ndarray) -> jnp.ndarray:
    """Positions that restart at 0 wherever the segment id changes along each row ``[B, T]``."""
    t = jnp.arange(segment_ids.shape[1])[None, :]
    start = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1
    )
    first = jax.lax.cummax(jnp.where(start, t, 0), axis=1)
    return (t - first).astype(jnp.int32)


def self_masks(segment_ids: jnp.ndarray, window: int | None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Causal block-diagonal masks ``[B, T, T]`` for full and sliding-window layers (True = may attend)."""
    t = jnp.arange(segment_ids.shape[1])
    causal = t[None, :, None] >= t[None, None, :]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    full = causal & same
    if window is None:
        return full, full
    return full, full & ((t[:, None] - t[None, :]) < window)[None]


def cache_masks(positions: jnp.ndarray, max_len: int, window: int | None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Masks ``[S, 1, max_len]`` for one new token per slot at ``positions [S]`` over a cache laid out by position."""
    k = jnp.arange(max_len)[None, :]
    q = positions[:, None]
    full = k <= q
    slide = full if window is None else full & ((q - k) < window)
    return full[:, None, :], slide[:, None, :]


def pick(cfg: LMConfig, sliding: jnp.ndarray | bool, for_sliding: jnp.ndarray, for_full: jnp.ndarray) -> jnp.ndarray:
    """The sliding-layer or full-layer variant for the current layer (a select only when layers differ)."""
    if isinstance(sliding, bool):  # unrolled layers know their kind
        return for_sliding if sliding else for_full
    kinds = set(cfg.sliding)
    if kinds == {True}:
        return for_sliding
    if kinds == {False}:
        return for_full
    return jnp.where(sliding, for_sliding, for_full)


def attention(
    cfg: LMConfig, q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, mask: jnp.ndarray, scale: jnp.ndarray | float
) -> jnp.ndarray:
    """Grouped-query attention: ``q [B,T,H,hd]``, ``k/v [B,KV,S,hd]`` (heads-major, the KV cache's layout),
    ``mask [B,T,S]`` -> ``[B,T,H*hd]``."""
    b, t, h, d = q.shape
    kv = k.shape[1]
    q = q.reshape(b, t, kv, h // kv, d)
    scores = jnp.einsum("btkgd,bksd->bkgts", q, k.astype(q.dtype), preferred_element_type=jnp.float32)
    scores = scores * scale
    if cfg.attn_softcap:
        scores = jnp.tanh(scores / cfg.attn_softcap) * cfg.attn_softcap
    scores = jnp.where(mask[:, None, None, :, :], scores, NEG)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bksd->btkgd", probs, v)
    return out.reshape(b, t, h * d)


__all__ = ["norm", "dense", "activation", "mlp", "segment_positions", "self_masks", "cache_masks", "pick", "attention"]
