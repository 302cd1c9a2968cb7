"""LoRA: low-rank adapters on a language model's projections, trained while the base stays frozen.

Adapters are a small tree in the stacked layout, ``{"layers": {"q": {"lora_a": [L, in, r], "lora_b":
[L, r, out]}, ...}}``: the train state (and so the optimizer state and the checkpoints) holds only them.
The base goes into the jitted step as a separate, non-donated input (:func:`frozen`: float, or int8
kernels with per-layer, per-channel scales that ``lm.layers.dense`` dequantises in the step), and
:func:`attach` puts the adapters beside its kernels for the forward pass. :func:`merge` folds them into
the base for publishing and generation: ``W + alpha / r * A @ B``.

>>> lora = {"r": 16, "alpha": 32.0, "targets": "attn", "base": "float"}
>>> adapters = init(cfg, lora, jax.random.key(0))
>>> logits = lm.forward(attach(base, adapters, lora), cfg, tokens)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InvalidInput
from .config import LORA_GROUPS, parse_lora

Tree = dict[str, Any]


def scale(lora: dict) -> float:
    """The factor of the low-rank update: alpha / r."""
    return float(lora["alpha"]) / int(lora["r"])


def targets(cfg: Any, lora: dict) -> tuple[str, ...]:
    """The projections of ``cfg``'s layers the adapters attach to; a one-line InvalidInput for a target that
    matches no layer of this architecture (e.g. ``gate`` on GPT-2, whose MLP has no gate)."""
    from ..lm import param_shapes

    present = [n for n in LORA_GROUPS["all"] if n in param_shapes(cfg)["layers"]]
    names: list[str] = []
    for target in parse_lora(lora)["targets"].split("|"):
        hit = [n for n in LORA_GROUPS.get(target, (target,)) if n in present]
        if not hit:
            raise InvalidInput(
                f"--lora targets={target} matches no layer of this {cfg.family} model; "
                f"its layers have {', '.join(present)}"
            )
        names += hit
    return tuple(dict.fromkeys(names))


def shapes(cfg: Any, lora: dict, dtype: Any = jnp.float32) -> Tree:
    """The adapters' tree as ``jax.ShapeDtypeStruct`` leaves."""
    from ..lm import param_shapes

    layers, r = param_shapes(cfg)["layers"], int(lora["r"])
    out = {}
    for name in targets(cfg, lora):
        n, i, o = layers[name]["kernel"].shape
        out[name] = {"lora_a": jax.ShapeDtypeStruct((n, i, r), dtype), "lora_b": jax.ShapeDtypeStruct((n, r, o), dtype)}
    return {"layers": out}


def init(cfg: Any, lora: dict, rng: jax.Array, dtype: Any = jnp.float32) -> Tree:
    """Fresh adapters: ``lora_a`` uniform in +-1/sqrt(in), ``lora_b`` zero, so training starts at the base."""
    tree = shapes(cfg, lora, dtype)["layers"]
    keys = jax.random.split(rng, len(tree))
    out = {}
    for key, (name, s) in zip(keys, sorted(tree.items())):
        a = s["lora_a"]
        bound = 1.0 / np.sqrt(a.shape[1])
        out[name] = {
            "lora_a": jax.random.uniform(key, a.shape, jnp.float32, -bound, bound).astype(dtype),
            "lora_b": jnp.zeros(s["lora_b"].shape, dtype),
        }
    return {"layers": out}


def attach(base: Tree, adapters: Tree, lora: dict) -> Tree:
    """``base`` with each target's ``lora_a`` and scaled ``lora_b`` beside its kernel (for the forward pass)."""
    s = scale(lora)
    layers = dict(base["layers"])
    for name, ab in adapters["layers"].items():
        layers[name] = {**layers[name], "lora_a": ab["lora_a"], "lora_b": ab["lora_b"] * s}
    return {**base, "layers": layers}


def merge(base: Tree, adapters: Tree, lora: dict) -> Tree:
    """Dense parameters with the adapters folded in: ``kernel + alpha / r * lora_a @ lora_b`` per layer, in
    float32, stored back in each kernel's dtype (numpy in, numpy out; stacked layout)."""
    s = scale(lora)
    layers = dict(base["layers"])
    for name, ab in adapters["layers"].items():
        kernel = np.asarray(layers[name]["kernel"])
        a, b = np.asarray(ab["lora_a"], np.float32), np.asarray(ab["lora_b"], np.float32)
        delta = np.einsum("lir,lro->lio", a, b) * np.float32(s)
        layers[name] = {**layers[name], "kernel": (kernel.astype(np.float32) + delta).astype(kernel.dtype)}
    return {**base, "layers": layers}


def check_adapters(cfg: Any, lora: dict, adapters: Tree) -> None:
    """A one-line InvalidInput unless ``adapters`` is the tree :func:`init` makes for ``cfg`` and ``lora``."""
    want = jax.tree.map(lambda s: tuple(s.shape), shapes(cfg, lora))
    got = jax.tree.map(lambda a: tuple(np.shape(a)), adapters)
    if want != got:
        raise InvalidInput(
            f"the adapters do not fit a {cfg.family} model with --lora r={lora['r']},targets={lora['targets']}"
        )


# -- the frozen base ----------------------------------------------------------------------------------
def _quantized(path: str) -> bool:
    """The kernels an int8 base keeps as int8 (the dense projections; embeddings and norms stay float)."""
    return path.endswith("/kernel") and (path.startswith("layers/") or path.startswith("lm_head/"))


def frozen(params: Tree, lora: dict, dtype: Any) -> Tree:
    """The base as the step takes it: float leaves in ``dtype``; with ``base=int8`` each projection kernel
    becomes int8 with float32 scales per layer and output channel (``kernel`` + ``kernel_scale``).
    Numpy in, numpy out."""
    from ..compress.quant import quantize_int8

    dtype = np.dtype(dtype)

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                sub = f"{path}/{k}" if path else k
                if lora["base"] == "int8" and _quantized(sub):
                    q = quantize_int8(np.asarray(v), stack=1 if sub.startswith("layers/") else 0)
                    out[k], out["kernel_scale"] = q.data, np.asarray(q.scale, np.float32)
                else:
                    out[k] = walk(v, sub)
            return out
        a = np.asarray(node)
        return a.astype(dtype) if np.issubdtype(a.dtype, np.floating) or a.dtype.kind == "V" else a

    return walk(params, "")


def frozen_shapes(cfg: Any, lora: dict, dtype: Any) -> Tree:
    """The abstract tree of :func:`frozen` (nothing loaded), for shardings and shape checks."""
    from ..lm import param_shapes

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                sub = f"{path}/{k}" if path else k
                if lora["base"] == "int8" and _quantized(sub):
                    out[k] = jax.ShapeDtypeStruct(v.shape, jnp.int8)
                    out["kernel_scale"] = jax.ShapeDtypeStruct((*v.shape[:-2], v.shape[-1]), jnp.float32)
                else:
                    out[k] = walk(v, sub)
            return out
        return jax.ShapeDtypeStruct(node.shape, dtype)

    return walk(param_shapes(cfg), "")


__all__ = ["scale", "targets", "shapes", "init", "attach", "merge", "check_adapters", "frozen", "frozen_shapes"]
