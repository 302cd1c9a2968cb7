"""The ``lm`` model kind: a registry language model as something a job trains, in full or with LoRA.

``--model NAME[:VERSION|ALIAS]`` of an imported (or published) language model resolves to the version's
spec plus a pinned ``base``: the version whose weights training starts from (``--init-from`` another
version of the same architecture swaps it), with its manifest's and tokenizer's sha256. :func:`build`
turns the spec into a ``train.models.Model`` in the stacked layout that the sharded step, orbax and the
compressor use:

- full fine-tuning: ``init`` gives the shapes, ``pretrained()`` the registry weights (float32 master
  weights, placed shard by shard by the trainer);
- LoRA: the params are the adapters only (``train.lora``); ``frozen(dtype)`` is the base, float or int8,
  which the step takes as a separate input.

Inputs are token ids ``[B, T]`` or ``[B, 2, T]`` rows of tokens and segment ids (``train.lm_data``), so
attention never crosses the documents packed into a row.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import AiosError, InvalidInput, NotFound


def resolve(ref: str) -> dict | None:
    """The spec of registry language model ``NAME[:VERSION|ALIAS]`` with its base pinned, or None when the
    registry has no language model of that name."""
    from ..registry import lm_artifact
    from ..registry.load import manifest, read_verified
    from ..registry.versions import get, parse_ref, versions

    try:
        name, version = parse_ref(ref)
    except InvalidInput:
        return None
    if not versions(name):
        return None
    mv = get(name, version)
    listed = manifest(mv)
    definition = json.loads(read_verified(mv, "model.json", listed))
    if not lm_artifact.is_lm(definition):
        return None
    spec = lm_artifact.spec_for(lm_artifact.spec_config(definition["spec"]))
    spec["base"] = {
        "model": mv.name,
        "version": mv.version,
        "manifest_sha256": mv.manifest_sha256,
        "tokenizer_sha256": listed[lm_artifact.TOKENIZER]["sha256"],
    }
    return spec


def config_of(spec: dict) -> Any:
    """The LMConfig of an ``lm`` spec."""
    from ..registry.lm_artifact import spec_config

    return spec_config(spec)


def prepare(spec: dict, ds: Any, init_from: str | None = None, lora: dict | None = None) -> dict:
    """``spec`` checked for a job on dataset ``ds`` (and re-based on ``init_from``): one-line InvalidInputs
    for another architecture, a LoRA target that matches no layer, or data tokenized for another tokenizer."""
    from ..data import check_tokenizer
    from . import lora as lora_lib

    cfg = config_of(spec)
    if init_from is not None:
        other = resolve(init_from)
        if other is None:
            raise NotFound(f"--init-from {init_from}: no language model of that name in the registry (`%aios models`)")
        if not same_architecture(cfg, config_of(other)):
            theirs = config_of(other)
            raise InvalidInput(
                f"--init-from {init_from} is a {theirs.family} model of {theirs.num_layers} layers, hidden "
                f"{theirs.hidden_size}, vocab {theirs.vocab_size}; --model is a {cfg.family} of {cfg.num_layers} "
                f"layers, hidden {cfg.hidden_size}, vocab {cfg.vocab_size}: give a model of the same architecture"
            )
        spec = {**spec, "base": other["base"]}
    if "base" not in spec:
        raise InvalidInput("a language model job starts from a registry version: --model NAME[:VERSION]")
    if lora is not None:
        lora_lib.targets(cfg, lora)
    check_tokenizer(ds, spec["base"]["tokenizer_sha256"])
    return spec


def same_architecture(a: Any, b: Any) -> bool:
    """Same family and the same parameter tree, shape for shape."""
    import jax

    from ..lm import param_shapes

    def shapes(cfg: Any) -> Any:
        return jax.tree.map(lambda s: tuple(s.shape), param_shapes(cfg))

    return a.family == b.family and shapes(a) == shapes(b)


def load_base(spec: dict, dtype: str | None = "float32") -> Any:
    """The base version's parameters (stacked layout, numpy on the host), verified against the manifest the
    job pinned."""
    from ..registry import load_lm

    base = spec["base"]
    m = load_lm(base["model"], base["version"], dtype=dtype, stacked=True, device="host", audit=False)
    if m.record.manifest_sha256 != base.get("manifest_sha256", m.record.manifest_sha256):
        raise AiosError(
            f"{m.ref} is not the version this job started from (its manifest changed); "
            "start a new job from the registry version you want"
        )
    return m.params


def build(spec: dict, lora: dict | None = None, remat: bool = False) -> Any:
    """A ``train.models.Model`` of the ``lm`` spec: full fine-tuning from the base's weights, or LoRA adapters
    over the frozen base (``lora``, see ``train.config.parse_lora``)."""
    import jax.numpy as jnp

    from ..lm import init_params
    from ..lm.model import forward
    from . import lora as lora_lib
    from .config import parse_lora
    from .lm_data import tokens_and_segments
    from .models import Model

    cfg = config_of(spec)
    has_base = "base" in spec

    def run(params: Any, x: Any) -> Any:
        tokens, segments = tokens_and_segments(x)
        return forward(params, cfg, tokens.astype(jnp.int32), segment_ids=segments, remat=remat)

    if lora is None:
        return Model(
            init=lambda rng, x=None: init_params(cfg, rng),
            apply=run,
            spec=spec,
            pretrained=(lambda: load_base(spec)) if has_base else None,
        )
    lora = parse_lora(lora)
    lora_lib.targets(cfg, lora)  # a target that matches no layer: one line, now
    if not has_base:
        raise InvalidInput("--lora trains adapters over a registry version: --model NAME[:VERSION]")
    return Model(
        init=lambda rng, x=None: lora_lib.init(cfg, lora, rng),
        apply=lambda adapters, x, base: run(lora_lib.attach(base, adapters, lora), x),
        spec=spec,
        frozen=lambda dtype: lora_lib.frozen(load_base(spec, dtype=None), lora, dtype),
        frozen_shapes=lambda dtype: lora_lib.frozen_shapes(cfg, lora, dtype),
    )


def reference(spec: dict, lora: dict | None) -> dict | None:
    """What a checkpoint of this model records about where its weights come from (None for other kinds):
    the base version (model, version, manifest sha256) and, for adapters, the LoRA settings."""
    if spec.get("kind") != "lm" or "base" not in spec:
        return None
    base = {k: spec["base"][k] for k in ("model", "version", "manifest_sha256") if k in spec["base"]}
    return {"base": base, "lora": lora}


def compress_layout(path: str, shape: tuple) -> tuple[int, int]:
    """How the compressor sees a language model's tensors (``compress_params(..., layout=)``): per-layer
    slices of the stacked ``layers/...`` tensors, and embeddings quantised per row (a row is what a token
    looks up, and a tied embedding's rows are the output channels of the head)."""
    if path.startswith("layers/"):
        return 1, -1
    if path in ("embed", "pos_embed"):
        return 0, 0
    return 0, -1


def compute_dtype(precision: str) -> Any:
    """The dtype a frozen float base is held in under ``precision``."""
    import jax.numpy as jnp

    return np.dtype(jnp.bfloat16) if precision == "bf16" else np.dtype(np.float32)


__all__ = ["resolve", "prepare", "build", "load_base", "reference", "compress_layout", "same_architecture"]
