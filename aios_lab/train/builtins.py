"""Built-in models (mlp, cnn, gpt) as Flax linen modules with size flags from the spec's config."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """Dense layers with GELU on flattened features; ``width`` x ``depth`` hidden units."""

    n_outputs: int
    width: int = 256
    depth: int = 2

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for _ in range(self.depth):
            x = nn.gelu(nn.Dense(self.width)(x))
        return nn.Dense(self.n_outputs)(x)


class CNN(nn.Module):
    """Conv-GELU-pool blocks then a dense head, for image-shaped features (H, W) or (H, W, C)."""

    n_outputs: int
    channels: Sequence[int] = (32, 64)
    hidden: int = 128
    image_shape: tuple = ()  # set by build(): the (H, W, C) the flat or 2-D features reshape to

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0],) + tuple(self.image_shape))
        for c in self.channels:
            x = nn.gelu(nn.Conv(c, (3, 3))(x))
            if min(x.shape[1:3]) >= 2:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.gelu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.n_outputs)(x)


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention then a GELU MLP."""

    d_model: int
    n_heads: int
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, x):
        b, t, d = x.shape
        h = nn.LayerNorm(use_bias=False)(x)
        qkv = nn.Dense(3 * d, use_bias=False, name="qkv")(h)
        q, k, v = jnp.split(qkv.reshape(b, t, 3 * self.n_heads, d // self.n_heads), 3, axis=2)
        att = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        x = x + nn.Dense(d, use_bias=False, name="proj")(att.reshape(b, t, d))
        h = nn.LayerNorm(use_bias=False)(x)
        h = nn.gelu(nn.Dense(self.mlp_ratio * d, use_bias=False, name="up")(h))
        return x + nn.Dense(d, use_bias=False, name="down")(h)


class GPT(nn.Module):
    """A small decoder-only transformer LM over int tokens [B, T] -> logits [B, T, vocab]."""

    n_outputs: int  # vocabulary size
    block_size: int = 128
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, tokens):
        b, t = tokens.shape
        tokens = tokens.astype(jnp.int32)
        emb = nn.Embed(self.n_outputs, self.d_model, name="wte")
        pos = self.param("wpe", nn.initializers.normal(0.02), (self.block_size, self.d_model))
        x = emb(tokens) + pos[:t].astype(emb.embedding.dtype)
        for i in range(self.n_layers):
            x = Block(self.d_model, self.n_heads, self.mlp_ratio, name=f"h{i}")(x)
        x = nn.LayerNorm(use_bias=False)(x)
        return emb.attend(x)  # tied input/output embedding


def _image_shape(feature_shape: tuple) -> tuple:
    """(H, W, C) for image-like features; a flat square length (e.g. digits' 64) becomes (8, 8, 1)."""
    if len(feature_shape) == 3:
        return tuple(feature_shape)
    if len(feature_shape) == 2:
        return (*feature_shape, 1)
    if len(feature_shape) == 1 and math.isqrt(feature_shape[0]) ** 2 == feature_shape[0]:
        s = math.isqrt(feature_shape[0])
        return (s, s, 1)
    raise ValueError(f"cnn needs image-shaped features (H, W[, C]) or a square length; got {feature_shape}")


def gpt_flops_per_token(cfg: dict[str, Any], vocab: int, block_size: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward) of GPT, counting matmuls and attention."""
    d, layers, r = cfg.get("d_model", 128), cfg.get("n_layers", 2), cfg.get("mlp_ratio", 4)
    per_layer = 2 * (3 * d * d + d * d + 2 * r * d * d) + 2 * 2 * block_size * d  # dense + qk/av (full)
    return 3.0 * (layers * per_layer + 2 * d * vocab)


BUILTINS = ("mlp", "cnn", "gpt")


def make(name: str, config: dict[str, Any], n_outputs: int, input_shape: tuple) -> nn.Module:
    """The built-in module ``name`` sized by ``config`` for ``n_outputs`` and per-sample ``input_shape``."""
    cfg = dict(config)
    if name == "mlp":
        return MLP(n_outputs, **cfg)
    if name == "cnn":
        if "channels" in cfg:
            cfg["channels"] = tuple(cfg["channels"])
        return CNN(n_outputs, image_shape=_image_shape(tuple(input_shape)), **cfg)
    if name == "gpt":
        if len(input_shape) != 1:
            raise ValueError(f"gpt needs token sequences [T]; got per-sample shape {tuple(input_shape)}")
        cfg.setdefault("block_size", int(input_shape[0]))
        return GPT(n_outputs, **cfg)
    raise ValueError(f"unknown built-in model {name!r}; built-ins are {', '.join(BUILTINS)}")
