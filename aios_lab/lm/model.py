"""The decoder-only transformer of every supported family: parameter shapes, random init and the forward pass.

Parameters are a plain dict of arrays. Per-layer tensors are stacked on a leading layer axis and the
forward pass runs ``jax.lax.scan`` over it (one compiled layer, whatever the depth): the training,
checkpoint and compression layout. Matmul kernels are ``[in, out]`` (stacked: ``[L, in, out]``).
:func:`unstack` gives the inference layout (``layers`` a tuple of per-layer dicts, an unrolled loop):
every function here and in ``decode`` takes either.

>>> model = LanguageModel(cfg)
>>> params = model.init(jax.random.key(0))
>>> logits = model.apply(params, tokens)                 # [B, T, V] float32
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import layers, rope
from .config import LMConfig

Params = dict[str, Any]
# attend(layer_index, sliding, scale, q, k, v, state) -> (attention output [B,T,H*hd], state)
Attend = Callable[..., tuple[jnp.ndarray, Any]]


def param_shapes(cfg: LMConfig, dtype: Any = jnp.float32) -> Params:
    """The parameter tree of ``cfg`` as ``jax.ShapeDtypeStruct`` leaves (nothing allocated)."""
    L, D, F, V = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    q_out, kv_out = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim

    def s(*shape: int) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype)

    def lin(i: int, o: int, bias: bool) -> dict:
        return {"kernel": s(L, i, o), **({"bias": s(L, o)} if bias else {})}

    def nrm(dim: int, stacked: bool = True) -> dict:
        shape = (L, dim) if stacked else (dim,)
        return {"scale": s(*shape), **({"bias": s(*shape)} if cfg.norm == "layer" else {})}

    lay: dict = {
        "attn_norm": nrm(D),
        "q": lin(D, q_out, cfg.qkv_bias),
        "k": lin(D, kv_out, cfg.qkv_bias),
        "v": lin(D, kv_out, cfg.qkv_bias),
        "o": lin(q_out, D, cfg.o_bias),
        "mlp_norm": nrm(D),
        "up": lin(D, F, cfg.mlp_bias),
        "down": lin(F, D, cfg.mlp_bias),
    }
    if cfg.gated_mlp:
        lay["gate"] = lin(D, F, cfg.mlp_bias)
    if cfg.qk_norm:
        lay["q_norm"], lay["k_norm"] = nrm(cfg.head_dim), nrm(cfg.head_dim)
    if cfg.sandwich_norm:
        lay["post_attn_norm"], lay["post_mlp_norm"] = nrm(D), nrm(D)
    tree: Params = {"embed": s(V, D), "layers": lay, "final_norm": nrm(D, stacked=False)}
    if cfg.learned_positions:
        tree["pos_embed"] = s(cfg.context, D)
    if not cfg.tie_embeddings:
        tree["lm_head"] = {"kernel": s(D, V)}
    return tree


def init_params(cfg: LMConfig, rng: jax.Array, dtype: Any = jnp.float32, scale: float = 0.02) -> Params:
    """Random parameters: weights N(0, scale), biases 0, norm scales 1 (0 where the norm adds 1 itself)."""
    shapes = param_shapes(cfg, dtype)
    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    keys = jax.random.split(rng, len(flat))
    leaves = []
    for key, (path, sd) in zip(keys, flat):
        names = [getattr(p, "key", "") for p in path]
        if names[-1] == "bias":
            leaves.append(jnp.zeros(sd.shape, dtype))
        elif names[-1] == "scale":
            leaves.append(jnp.full(sd.shape, 0.0 if cfg.norm_offset else 1.0, dtype))
        else:
            leaves.append((scale * jax.random.normal(key, sd.shape, jnp.float32)).astype(dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def count_params(cfg: LMConfig) -> int:
    """How many parameters ``cfg`` has."""
    return int(sum(np.prod(s.shape) for s in jax.tree.leaves(param_shapes(cfg))))


def embed(params: Params, cfg: LMConfig, tokens: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
    """Token embeddings (Gemma: times sqrt(hidden) in the weights' dtype; GPT-2: plus learned positions)."""
    x = jnp.take(params["embed"], tokens, axis=0)
    if cfg.embed_scale != 1.0:
        x = x * jnp.asarray(cfg.embed_scale, x.dtype)
    if cfg.learned_positions:
        x = x + jnp.take(params["pos_embed"], positions, axis=0).astype(x.dtype)
    return x


def _rope_tables(cfg: LMConfig, positions: jnp.ndarray) -> tuple:
    """(cos, sin) for full layers and for sliding layers (Gemma 3's local base), float32 ``[B, T, hd]``."""
    if cfg.learned_positions:
        return None
    glob = rope.cos_sin(cfg.rope, cfg.head_dim, positions)
    local = rope.cos_sin(cfg.rope_local, cfg.head_dim, positions) if cfg.rope_local else glob
    return glob, local


def _layer_scales(cfg: LMConfig) -> np.ndarray:
    """Each layer's attention scale (GPT-2 can divide it by the layer number)."""
    scales = np.full(cfg.num_layers, cfg.scale, np.float32)
    if cfg.attn_scale_by_layer:
        scales = scales / np.arange(1, cfg.num_layers + 1, dtype=np.float32)
    return scales


def unstack(params: Params) -> Params:
    """The same parameters with ``layers`` as a tuple of per-layer dicts (the inference layout).

    Inference over unstacked layers unrolls the layer loop, so no step copies a layer's weights out of
    the stacked arrays (on CPU, decoding ran 1.4-1.8x faster); it compiles every layer, not one. This
    copies the layers (two copies exist until the caller drops the stacked ones);
    ``load_pretrained`` splits them as it reads instead."""
    lay = params["layers"]
    if isinstance(lay, (list, tuple)):
        return params
    n = jax.tree.leaves(lay)[0].shape[0]
    out: list[dict] = [{} for _ in range(n)]
    flat, _ = jax.tree_util.tree_flatten_with_path(lay)
    for path, leaf in flat:
        keys = [k.key for k in path]
        for i in range(n):
            node = out[i]
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = leaf[i]
    return {**params, "layers": tuple(out)}


def stack(params: Params) -> Params:
    """The inverse of :func:`unstack`: per-layer tensors stacked on a leading layer axis (training layout)."""
    lay = params["layers"]
    if not isinstance(lay, (list, tuple)):
        return params
    xp = np if all(isinstance(a, np.ndarray) for a in jax.tree.leaves(lay)) else jnp
    return {**params, "layers": jax.tree.map(lambda *ls: xp.stack(ls), *lay)}


def decoder(
    params: Params,
    cfg: LMConfig,
    x: jnp.ndarray,
    positions: jnp.ndarray,
    attend: Attend,
    state: Any,
    remat: bool = False,
) -> tuple[jnp.ndarray, Any]:
    """Run every layer over hidden states ``x [B, T, D]``; ``attend`` does the attention proper (over the
    tokens themselves, or over a KV cache it carries in ``state``). Stacked layers run as a ``lax.scan``
    (the layer index is traced); unstacked ones (:func:`unstack`) as an unrolled loop (a Python int).
    Returns the final-normed hidden states and the state."""
    tables = _rope_tables(cfg, positions)
    b, t, _ = x.shape
    H, KV, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

    def body(carry, xs):
        x, state = carry
        lp, sliding, scale, index = xs
        h = layers.norm(cfg, lp["attn_norm"], x)
        q = layers.dense(lp["q"], h).reshape(b, t, H, hd)
        k = layers.dense(lp["k"], h).reshape(b, t, KV, hd)
        v = layers.dense(lp["v"], h).reshape(b, t, KV, hd)
        if cfg.qk_norm:
            q, k = layers.norm(cfg, lp["q_norm"], q), layers.norm(cfg, lp["k_norm"], k)
        if tables is not None:
            (gc, gs), (lc, ls) = tables
            cos, sin = (
                (layers.pick(cfg, sliding, lc, gc), layers.pick(cfg, sliding, ls, gs)) if cfg.rope_local else (gc, gs)
            )
            q, k = rope.apply(q, cos, sin), rope.apply(k, cos, sin)
        a, state = attend(index, sliding, scale, q, k, v, state)
        a = layers.dense(lp["o"], a)
        if cfg.sandwich_norm:
            a = layers.norm(cfg, lp["post_attn_norm"], a)
        x = x + a
        h = layers.norm(cfg, lp["mlp_norm"], x)
        m = layers.mlp(cfg, lp, h)
        if cfg.sandwich_norm:
            m = layers.norm(cfg, lp["post_mlp_norm"], m)
        return (x + m, state), None

    scales = _layer_scales(cfg)
    lay = params["layers"]
    if isinstance(lay, (list, tuple)):
        for i, lp in enumerate(lay):
            (x, state), _ = body((x, state), (lp, cfg.sliding[i], float(scales[i]), i))
    else:
        xs = (lay, jnp.asarray(cfg.sliding, bool), jnp.asarray(scales), jnp.arange(cfg.num_layers, dtype=jnp.int32))
        (x, state), _ = jax.lax.scan(jax.checkpoint(body) if remat else body, (x, state), xs)
    return layers.norm(cfg, params["final_norm"], x), state


def head(params: Params, cfg: LMConfig, h: jnp.ndarray) -> jnp.ndarray:
    """Logits (float32) from final hidden states: the tied embedding or ``lm_head``, then Gemma's soft cap."""
    if cfg.tie_embeddings:
        out = jnp.einsum("...d,vd->...v", h, params["embed"].astype(h.dtype))
    else:
        out = layers.dense(params["lm_head"], h)
    out = out.astype(jnp.float32)
    if cfg.final_softcap:
        out = jnp.tanh(out / cfg.final_softcap) * cfg.final_softcap
    return out


def forward(
    params: Params,
    cfg: LMConfig,
    tokens: jnp.ndarray,
    positions: jnp.ndarray | None = None,
    segment_ids: jnp.ndarray | None = None,
    remat: bool = False,
) -> jnp.ndarray:
    """Logits ``[B, T, V]`` (float32) for ``tokens [B, T]``.

    ``segment_ids [B, T]``: tokens attend only within their own segment (packed documents), causally;
    give padding its own id (e.g. 0). ``positions`` default to the index within each segment.
    """
    tokens = jnp.asarray(tokens)
    if segment_ids is None:
        segment_ids = jnp.ones(tokens.shape, jnp.int32)
    if positions is None:
        positions = layers.segment_positions(segment_ids)
    full, slide = layers.self_masks(segment_ids, cfg.sliding_window)

    def attend(index, sliding, scale, q, k, v, state):
        k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)  # heads-major
        return layers.attention(cfg, q, k, v, layers.pick(cfg, sliding, slide, full), scale), state

    x = embed(params, cfg, tokens, positions)
    h, _ = decoder(params, cfg, x, positions, attend, (), remat=remat)
    return head(params, cfg, h)


# ``forward`` compiled once per config and shape: for evaluation and tests (a train step jits its own).
logits = jax.jit(forward, static_argnames=("cfg", "remat"))


class LanguageModel:
    """A family config bound to pure ``init``/``apply``: fits ``train.models.Model`` (``init(rng, x)``,
    ``apply(params, x) -> [B, T, V]`` logits), the jitted sharded train step, orbax and the compressor."""

    def __init__(self, cfg: LMConfig, dtype: Any = jnp.float32, remat: bool = False):
        self.cfg, self.dtype, self.remat = cfg, dtype, remat

    def init(self, rng: jax.Array, x: Any = None) -> Params:
        """Random parameters (``x``, a sample batch, is accepted for the Model contract and ignored)."""
        return init_params(self.cfg, rng, self.dtype)

    def apply(
        self,
        params: Params,
        tokens: jnp.ndarray,
        *,
        positions: jnp.ndarray | None = None,
        segment_ids: jnp.ndarray | None = None,
    ) -> jnp.ndarray:
        """Logits ``[B, T, V]`` float32; see :func:`forward`."""
        return forward(params, self.cfg, tokens, positions, segment_ids, remat=self.remat)

    def shapes(self) -> Params:
        return param_shapes(self.cfg, self.dtype)

    def __repr__(self) -> str:
        return f"LanguageModel({self.cfg.family}, {self.cfg.num_layers} layers, hidden {self.cfg.hidden_size})"


__all__ = [
    "logits",
    "LanguageModel",
    "param_shapes",
    "init_params",
    "count_params",
    "forward",
    "decoder",
    "embed",
    "head",
    "unstack",
    "stack",
]
