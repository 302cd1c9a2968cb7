"""``%aios model import NAME --from PATH | hf:ORG/REPO[@REV]``: a Hugging Face checkpoint becomes a registry version.

Everything is checked before a byte is written: the architecture (``lm.read_config``), the tokenizer
against the embedding (``lm.Tokenizer``), the chat template (it must compile), every safetensors
shard against the index and its own header (``lm.SafetensorsCheckpoint``). Then the tensors stream,
one at a time, from ``lm.iter_params`` into ``params.safetensors`` (hashed while written), next to
the tokenizer files, in a staging folder that :mod:`aios_lab.atomic` publishes as ``vN`` or discards.

>>> mv = aios.import_model("qwen", "hf:Qwen/Qwen3-0.6B")
>>> aios.registry.load("qwen").generate("Hello", max_tokens=16).text
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from .. import atomic, config
from ..errors import InvalidInput
from ..names import check_name
from . import aliases, hf_source, lm_artifact
from .params_stream import ParamsWriter
from .publish import _json, _version, code_hash, commit, sha256_bytes
from .versions import ModelVersion, check_alias

STORE_DTYPES = ("float32", "bfloat16", "float16")


def import_model(name: str, source: str, alias: str | None = None, dtype: str | None = None) -> ModelVersion:
    """Import the checkpoint at ``source`` (a directory or ``hf:ORG/REPO[@REV]``) as the next version of ``name``.

    ``dtype``: what to store (float32, bfloat16, float16); by default the checkpoint's own dtype
    (float32 when its tensors mix dtypes). Bad input is a one-line error and writes nothing.
    """
    from .. import lm

    check_name(name, "model")
    if alias is not None:
        check_alias(alias)
        aliases.check_publish(name, alias)
    if dtype is not None and str(dtype) not in STORE_DTYPES:
        raise InvalidInput(f"--dtype {dtype}: store as one of {', '.join(STORE_DTYPES)}")
    src = hf_source.resolve(source)
    cfg = lm.read_config(src.path)
    lm.Tokenizer.from_dir(src.path, cfg)  # the vocabulary must fit the embedding; the template must compile
    template = lm.find_template(src.path)
    with lm.SafetensorsCheckpoint(src.path) as ckpt:
        store = _store_dtype(ckpt, cfg, dtype)
        cfg = cfg.replace(dtype=store.name)
        plan, tree = _plan(cfg, store)
        files = {f: os.path.join(src.path, f) for f in lm_artifact.HF_FILES}
        files = {f: p for f, p in files.items() if os.path.isfile(p)}
        read = [*files.values(), *ckpt.paths()]
        lineage = {
            **src.lineage,
            "imported": True,
            "format": "huggingface",
            "architecture": cfg.architecture,
            "dtype": store.name,
            "files": {os.path.basename(p): hf_source.sha256_file(p) for p in read},
        }
        with atomic.staged("model", name) as tmp:
            entries = {}
            with config.open_private(tmp / "params.safetensors", "wb") as f:
                writer = ParamsWriter(f, plan, tree, {"source": str(lineage["source"])})
                for path, array in lm.iter_params(ckpt, cfg, store):
                    writer.add(path, array)
                    del array
                entries["params.safetensors"] = writer.close()
            blobs = {}
            for fname, fpath in files.items():
                with open(fpath, "rb") as fh:
                    blobs[fname] = fh.read()
            if template is not None:
                blobs["chat_template.jinja"] = template.encode()
            signature = lm_artifact.signature(cfg)
            spec = lm_artifact.spec_for(cfg)
            definition = {
                "format": "aios-model/1",
                "name": name,
                "spec": spec,
                "task": "lm",
                "input_shape": [-1],
                "input_dtype": "int32",
                "n_outputs": cfg.vocab_size,
                "method": None,
                "dtype": store.name,
                "layout": lm_artifact.LAYOUT,
                "card": lm.card(cfg).to_dict(),
                "generation": lm_artifact.generation_config(blobs),
            }
            lineage.update(method=None, code_hash=code_hash(spec), aios_lab=_version())
            blobs.update(
                {
                    "model.json": _json(definition, "the model spec"),
                    "signature.json": _json(signature, "signature"),
                    "metrics.json": _json({}, "metrics"),
                    "lineage.json": _json(lineage, "lineage"),
                }
            )
            for fname, b in blobs.items():
                with config.open_private(tmp / fname, "wb") as fh:
                    fh.write(b)
                entries[fname] = (sha256_bytes(b), len(b))
            return commit(name, tmp, entries, signature, {}, lineage, alias=alias, action="import")


def _store_dtype(ckpt: Any, cfg: Any, dtype: str | None) -> np.dtype:
    """``dtype`` if given; else the one floating dtype of the tensors the model uses (float32 if they mix)."""
    from ..compress import params_file
    from ..lm.weights import sources

    if dtype is not None:
        return np.dtype(params_file.DTYPES[{"float32": "F32", "bfloat16": "BF16", "float16": "F16"}[dtype]])
    wanted = {s.name.format(i=i) for s in sources(cfg).values() for i in range(cfg.num_layers)}
    used = [n for n in ckpt.names() if _suffixes(n) & wanted] or ckpt.names()
    codes = {ckpt.dtype(n) for n in used}
    unknown = sorted(c for c in codes if c not in params_file.DTYPES)
    if unknown:
        raise InvalidInput(
            f"the checkpoint stores {unknown[0]} tensors, which aios does not read; convert it to bf16 or fp32"
        )
    floats = {c for c in codes if lm_artifact.is_float(params_file.DTYPES[c])}
    return params_file.DTYPES[floats.pop()] if len(floats) == 1 else np.dtype(np.float32)


def _suffixes(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[i:]) for i in range(len(parts))}


def _plan(cfg: Any, store: np.dtype) -> tuple[list[tuple[str, tuple, np.dtype]], dict]:
    """Every parameter's (path, shape, dtype) in the order ``lm.iter_params`` yields them, and the tree skeleton."""
    import jax

    from ..lm import nest, param_shapes

    flat, _ = jax.tree_util.tree_flatten_with_path(param_shapes(cfg))
    plan = [("/".join(k.key for k in path), tuple(sd.shape), store) for path, sd in flat]
    return plan, nest({p: p for p, *_ in plan})


def describe(mv: ModelVersion) -> str:
    """One line about an imported (or any language-model) version: its card, read from model.json."""
    from .load import manifest, read_verified

    definition = json.loads(read_verified(mv, "model.json", manifest(mv)))
    if not lm_artifact.is_lm(definition):
        return f"{mv.ref}: not a language model"
    from ..lm import ModelCard

    return f"{mv.ref}: {ModelCard(**definition['card'])}"


__all__ = ["import_model", "describe", "STORE_DTYPES"]
