"""What a language-model version holds beyond every version's files, and how it is recognised.

A language model's ``model.json`` has ``task: "lm"`` and ``spec: {"kind": "lm", "family": ...,
"config": LMConfig.to_dict(), "base": {"model", "version"}?}``, plus ``dtype`` (what
``params.safetensors`` stores), ``layout`` ("stacked": per-layer tensors on a leading layer axis),
``card`` (``lm.card``) and ``generation`` (generation_config.json). Beside the usual files the
version keeps the Hugging Face files a tokenizer needs (:data:`HF_FILES`), so the version folder
itself is what ``lm.Tokenizer.from_dir`` reads.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import InvalidInput

KIND = "lm"
LAYOUT = "stacked"
TOKENIZER = "tokenizer.json"
# copied from the checkpoint when present; chat_template.jinja is written from wherever the template was found
HF_FILES = (
    "config.json",
    "generation_config.json",
    TOKENIZER,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


FLOATS = ("float64", "float32", "float16", "bfloat16")


def is_float(dtype: Any) -> bool:
    """Floating point, bfloat16 included (numpy files ml_dtypes' bfloat16 under kind "V")."""
    return np.dtype(dtype).name in FLOATS


def is_lm(definition: dict[str, Any]) -> bool:
    """Is this ``model.json`` a language model's?"""
    spec = definition.get("spec")
    return isinstance(spec, dict) and spec.get("kind") == KIND


def spec_for(cfg: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model spec of a language model (``base``: the version it was derived from)."""
    spec = {"kind": KIND, "family": cfg.family, "config": cfg.to_dict()}
    if base is not None:
        spec["base"] = {"model": base["model"], "version": int(base["version"])}
    return spec


def spec_config(spec: dict[str, Any]) -> Any:
    """The LMConfig a spec carries; a one-line InvalidInput if it carries none."""
    from ..lm import from_dict

    try:
        return from_dict(spec["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(
            f"a language model spec needs config = LMConfig.to_dict() ({type(exc).__name__}: {exc})"
        ) from None


def signature(cfg: Any) -> dict[str, Any]:
    """Token ids in, next-token logits out (batch and length variable); text in/out for generation."""
    return {
        "inputs": [{"name": "input_ids", "datatype": "INT32", "shape": [-1, -1]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, -1, int(cfg.vocab_size)]}],
        "generate": {
            "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1]}],
            "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [1]}],
        },
        "context": int(cfg.context),
    }


def _leaves(params: Any) -> dict[str, Any]:
    import jax

    from ..compress.quant import is_q

    flat, _ = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_q)
    return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): leaf for path, leaf in flat}


def check_params(cfg: Any, params: Any) -> None:
    """A one-line InvalidInput unless ``params`` is ``cfg``'s tree in the stacked layout (compressed leaves too)."""
    from ..lm import param_shapes

    want = {k: tuple(v.shape) for k, v in _leaves(param_shapes(cfg)).items()}
    got = {k: tuple(np.shape(v) if not hasattr(v, "shape") else v.shape) for k, v in _leaves(params).items()}
    if want != got:
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
        what = (
            f"lacks {missing[0]}"
            if missing
            else f"has {extra[0]}, which the config has no place for"
            if extra
            else f"has {wrong[0]} shaped {list(got[wrong[0]])}, the config needs {list(want[wrong[0]])}"
        )
        raise InvalidInput(f"the parameters do not fit the {cfg.family} config: the tree {what} (stacked layout)")


def stored_dtype(params: Any) -> str:
    """The dtype of the first dense floating leaf (what the version stores)."""
    from ..compress.quant import is_q

    for leaf in _leaves(params).values():
        if not is_q(leaf) and is_float(leaf.dtype):
            return np.dtype(leaf.dtype).name
    return "float32"


def definition_extra(cfg: Any, params: Any, files: dict[str, bytes]) -> dict[str, Any]:
    """The language-model fields of model.json: dtype, layout, card, generation config."""
    from ..lm import card

    dtype = stored_dtype(params)
    return {
        "dtype": dtype,
        "layout": LAYOUT,
        "card": card(cfg.replace(dtype=dtype)).to_dict(),
        "generation": generation_config(files),
    }


def generation_config(files: dict[str, bytes]) -> dict[str, Any]:
    raw = files.get("generation_config.json")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidInput("generation_config.json is not JSON") from None
    return value if isinstance(value, dict) else {}


def base_files(spec: dict[str, Any], files: dict[str, bytes]) -> dict[str, bytes]:
    """The tokenizer files a derived language model inherits from its ``base`` version (none if ``files`` has them)."""
    if TOKENIZER in files:
        return {}
    base = spec.get("base")
    if not isinstance(base, dict) or "model" not in base:
        raise InvalidInput(
            "a language model version needs its tokenizer: give spec['base'] = {'model', 'version'} "
            "or files=registry.lm_files(BASE, VERSION)"
        )
    return lm_files(base["model"], base.get("version"))


def lm_files(model: str, version: int | str | None = None) -> dict[str, bytes]:
    """The verified Hugging Face files (tokenizer, template, configs) of a language-model version."""
    from .load import manifest, read_verified
    from .versions import get

    mv = get(model, version)
    listed = manifest(mv)
    if TOKENIZER not in listed:
        raise InvalidInput(f"{mv.ref} is not a language model with a tokenizer (it has no {TOKENIZER})")
    return {name: read_verified(mv, name, listed) for name in HF_FILES if name in listed}


def tokenizer_sha(model: str, version: int | str | None = None) -> str:
    """The sha256 of a language-model version's tokenizer.json (its tokenizer's identity), from its manifest."""
    from .load import manifest
    from .versions import get

    mv = get(model, version)
    listed = manifest(mv)
    if TOKENIZER not in listed:
        raise InvalidInput(f"{mv.ref} is not a language model with a tokenizer (it has no {TOKENIZER})")
    return listed[TOKENIZER]["sha256"]


__all__ = [
    "KIND",
    "HF_FILES",
    "is_lm",
    "spec_for",
    "spec_config",
    "signature",
    "check_params",
    "lm_files",
    "tokenizer_sha",
]
