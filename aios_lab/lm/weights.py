"""Hugging Face weights -> our stacked parameter tree, streamed one target tensor at a time.

Each target (``layers/q/kernel``, ``embed``, ...) is filled into one preallocated numpy array layer by
layer, straight from the (memory-mapped) safetensors, then handed on: at most one target tensor and one
source tensor are in memory at once, so a checkpoint is never held twice. A registry writer streams
:func:`iter_params`; :func:`load_params` builds the whole tree.

>>> cfg = read_config(path)
>>> for name, array in iter_params(path, cfg):        # "layers/q/kernel", np.ndarray [L, D, H*hd]
...     writer.add(name, array)
>>> params = load_params(path, cfg)                   # the pytree LanguageModel.apply takes
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from ..errors import AiosError
from .config import LMConfig
from .model import param_shapes
from .safetensors_files import SafetensorsCheckpoint


@dataclass(frozen=True)
class Source:
    """Where one target tensor comes from: a name (``{i}`` = layer) and how to turn it into our layout."""

    name: str
    transform: Callable[[np.ndarray], np.ndarray] = lambda a: a


def _t(a: np.ndarray) -> np.ndarray:
    return a.T  # torch Linear [out, in] -> [in, out]


def _part(k: int, n: int = 3) -> Callable[[np.ndarray], np.ndarray]:
    """The k-th of n equal slices along the last axis (GPT-2's fused c_attn)."""
    return lambda a: np.split(a, n, axis=-1)[k]


def sources(cfg: LMConfig) -> dict[str, Source]:
    """Our parameter path -> its Hugging Face source, for ``cfg``'s family (prefixes such as ``model.`` stripped)."""
    if cfg.family == "gpt2":
        out = {
            "embed": Source("wte.weight"),
            "pos_embed": Source("wpe.weight"),
            "final_norm/scale": Source("ln_f.weight"),
            "final_norm/bias": Source("ln_f.bias"),
        }
        lay = {
            "attn_norm/scale": "ln_1.weight",
            "attn_norm/bias": "ln_1.bias",
            "mlp_norm/scale": "ln_2.weight",
            "mlp_norm/bias": "ln_2.bias",
        }
        out.update({f"layers/{k}": Source(f"h.{{i}}.{v}") for k, v in lay.items()})
        for k, part in (("q", 0), ("k", 1), ("v", 2)):  # Conv1D weights are already [in, out]
            out[f"layers/{k}/kernel"] = Source("h.{i}.attn.c_attn.weight", _part(part))
            out[f"layers/{k}/bias"] = Source("h.{i}.attn.c_attn.bias", _part(part))
        out.update(
            {
                "layers/o/kernel": Source("h.{i}.attn.c_proj.weight"),
                "layers/o/bias": Source("h.{i}.attn.c_proj.bias"),
                "layers/up/kernel": Source("h.{i}.mlp.c_fc.weight"),
                "layers/up/bias": Source("h.{i}.mlp.c_fc.bias"),
                "layers/down/kernel": Source("h.{i}.mlp.c_proj.weight"),
                "layers/down/bias": Source("h.{i}.mlp.c_proj.bias"),
            }
        )
        if not cfg.tie_embeddings:
            out["lm_head/kernel"] = Source("lm_head.weight", _t)
        return out
    out = {"embed": Source("embed_tokens.weight"), "final_norm/scale": Source("norm.weight")}
    if not cfg.tie_embeddings:
        out["lm_head/kernel"] = Source("lm_head.weight", _t)
    p = "layers.{i}."
    for ours, theirs in (
        ("q", "self_attn.q_proj"),
        ("k", "self_attn.k_proj"),
        ("v", "self_attn.v_proj"),
        ("o", "self_attn.o_proj"),
        ("gate", "mlp.gate_proj"),
        ("up", "mlp.up_proj"),
        ("down", "mlp.down_proj"),
    ):
        out[f"layers/{ours}/kernel"] = Source(p + theirs + ".weight", _t)
        out[f"layers/{ours}/bias"] = Source(p + theirs + ".bias")
    norms = {"attn_norm": "input_layernorm", "q_norm": "self_attn.q_norm", "k_norm": "self_attn.k_norm"}
    if cfg.sandwich_norm:  # Gemma: post_attention_layernorm follows attention; pre_feedforward precedes the MLP
        norms.update(
            post_attn_norm="post_attention_layernorm",
            mlp_norm="pre_feedforward_layernorm",
            post_mlp_norm="post_feedforward_layernorm",
        )
    else:
        norms["mlp_norm"] = "post_attention_layernorm"
    out.update({f"layers/{k}/scale": Source(p + v + ".weight") for k, v in norms.items()})
    return out


PREFIXES = ("model.language_model.", "language_model.model.", "model.", "transformer.")


def _resolve(ckpt: SafetensorsCheckpoint, name: str, arch: str) -> str:
    """The stored name for ``name``: as is, or under one of the usual prefixes."""
    if name in ckpt.tensors:
        return name
    if name == "lm_head.weight":
        for alt in ("language_model.lm_head.weight",):
            if alt in ckpt.tensors:
                return alt
    for prefix in PREFIXES:
        if prefix + name in ckpt.tensors:
            return prefix + name
    raise AiosError(
        f"checkpoint in {ckpt.path} has no tensor {name!r} (as {arch} needs); is config.json from the same model?"
    )


def _targets(cfg: LMConfig) -> list[tuple[str, jax.ShapeDtypeStruct]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(param_shapes(cfg))
    return [("/".join(getattr(k, "key", str(k)) for k in path), sd) for path, sd in flat]


def iter_params(
    src: str | SafetensorsCheckpoint, cfg: LMConfig, dtype: Any = np.float32
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(path, array)`` for every parameter of ``cfg`` (stacked ``[L, ...]`` for per-layer tensors).

    ``dtype``: what each array is converted to (None keeps the checkpoint's dtype, e.g. bfloat16).
    Every shape is checked against ``cfg``; a missing tensor or a wrong shape is a one-line AiosError.
    """
    ckpt = src if isinstance(src, SafetensorsCheckpoint) else SafetensorsCheckpoint(src)
    table = sources(cfg)
    try:
        for path, sd in _targets(cfg):
            source = table[path]
            if path.startswith("layers/"):
                first = ckpt.get(_resolve(ckpt, source.name.format(i=0), cfg.architecture))
                out = np.empty(sd.shape, dtype or first.dtype)
                for i in range(cfg.num_layers):
                    a = first if i == 0 else ckpt.get(_resolve(ckpt, source.name.format(i=i), cfg.architecture))
                    _place(out, i, source.transform(a), path, source.name.format(i=i))
                    del a
                del first
            else:
                a = source.transform(ckpt.get(_resolve(ckpt, source.name, cfg.architecture)))
                if a.shape != sd.shape:
                    raise AiosError(
                        f"tensor {source.name} has shape {a.shape}, config.json implies {sd.shape} "
                        f"for {path}; is config.json from the same model?"
                    )
                out = np.asarray(a, dtype or a.dtype)
            yield path, out
    finally:
        if ckpt is not src:
            ckpt.close()


def _place(out: np.ndarray, i: int, a: np.ndarray, path: str, name: str) -> None:
    if a.shape != out.shape[1:]:
        raise AiosError(
            f"tensor {name} has shape {a.shape}, config.json implies {out.shape[1:]} for {path}; "
            "is config.json from the same model?"
        )
    out[i] = a


def nest(flat: dict[str, Any]) -> dict:
    """``{"layers/q/kernel": a}`` -> ``{"layers": {"q": {"kernel": a}}}``."""
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def load_params(src: str, cfg: LMConfig, dtype: Any = np.float32) -> dict:
    """The whole parameter tree of checkpoint ``src`` as numpy arrays (see :func:`iter_params`)."""
    return nest(dict(iter_params(src, cfg, dtype)))


__all__ = ["iter_params", "load_params", "sources", "nest", "Source"]
