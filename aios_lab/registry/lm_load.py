"""A language-model version loaded for use: config, parameters, tokenizer and chat template, all verified.

Every file is checked against the manifest before it is used; ``params.safetensors`` is hashed while
it is read, one tensor at a time straight onto the device, so the host never holds the model twice
and nothing is returned unless the digest matched. This is the door for the serving engine and for
training: :func:`load_lm` (or ``registry.load`` on a language model) -> :class:`LoadedLM`, and
:meth:`LoadedLM.parts` for the bare pieces.

>>> m = aios.registry.load("qwen", "production")
>>> m.generate([{"role": "user", "content": "Hi"}], max_tokens=32, temperature=0.7, seed=0).text
>>> cfg, params, tok, template, eos = m.parts()
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import InvalidInput
from . import lm_artifact
from .params_stream import read_params
from .versions import ModelVersion, get

PARAMS = "params.safetensors"
HOST = "host"  # device= value that keeps parameters as numpy arrays on the host


class LMParts(NamedTuple):
    """What a serving engine needs to run a language model."""

    config: Any  # lm.LMConfig
    params: Any  # the parameter tree (see LoadedLM.params)
    tokenizer: Any  # lm.Tokenizer
    chat_template: Any  # lm.ChatTemplate or None
    eos_ids: tuple[int, ...]


@dataclass
class LoadedLM:
    """A verified language-model version: ``generate``/``stream`` plus what they are made of."""

    record: ModelVersion
    definition: dict[str, Any]
    config: Any  # lm.LMConfig
    params: Any  # per-layer tuple under "layers" (generation layout) unless loaded with stacked=True
    tokenizer: Any  # lm.Tokenizer over the version's own tokenizer files
    signature: dict[str, Any]
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    tokenizer_sha: str  # sha256 of tokenizer.json: the tokenizer's identity (datasets record it)
    dtype: str  # what the parameters are now (stored dtype, or the one asked for at load)
    stacked: bool
    task = "lm"

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def version(self) -> int:
        return self.record.version

    @property
    def ref(self) -> str:
        return self.record.ref

    @property
    def path(self) -> Path:
        return Path(self.record.path)

    @property
    def chat_template(self) -> Any:
        return self.tokenizer.template

    @property
    def eos_ids(self) -> tuple[int, ...]:
        return tuple(self.tokenizer.eos_ids)

    @property
    def generation_config(self) -> dict[str, Any]:
        return dict(self.definition.get("generation") or {})

    @property
    def card(self) -> Any:
        from ..lm import card

        return card(self.config, self.params)

    @property
    def metadata(self) -> dict[str, Any]:
        """Everything known about this version: definition, card, signature, metrics, lineage, hashes, aliases."""
        mv = self.record
        return {
            "name": mv.name,
            "version": mv.version,
            "path": mv.path,
            "task": "lm",
            "spec": self.definition["spec"],
            "method": self.definition.get("method"),
            "dtype": self.definition.get("dtype"),
            "card": self.definition.get("card"),
            "generation": self.generation_config,
            "signature": self.signature,
            "metrics": self.metrics,
            "lineage": self.lineage,
            "tokenizer_sha256": self.tokenizer_sha,
            "manifest_sha256": mv.manifest_sha256,
            "nbytes": mv.nbytes,
            "aliases": mv.aliases,
            "created": mv.created,
            "created_by": mv.created_by,
        }

    def predict(self, x: Any, segment_ids: Any = None) -> np.ndarray:
        """Logits ``[batch, positions, vocab]`` (float32 numpy) for token ids ``x [batch, positions]`` (one row
        ``[positions]`` gives ``[positions, vocab]``); ``segment_ids`` keep packed documents apart."""
        from ..lm.model import logits

        x = np.asarray(x)
        single = x.ndim == 1
        if single:
            x = x[None]
            segment_ids = None if segment_ids is None else np.asarray(segment_ids)[None]
        if x.ndim != 2 or x.dtype.kind not in "iu" or (x.size and (x.min() < 0 or x.max() >= self.config.vocab_size)):
            raise InvalidInput(
                f"{self.ref} takes token ids in 0..{self.config.vocab_size - 1} shaped [batch, positions], "
                f"got {x.dtype} {list(x.shape)}"
            )
        seg = None if segment_ids is None else np.asarray(segment_ids, np.int32)
        out = np.asarray(logits(self.params, cfg=self.config, tokens=x.astype(np.int32), segment_ids=seg))
        return out[0] if single else out

    def parts(self) -> LMParts:
        """``(config, params, tokenizer, chat_template, eos_ids)`` for a serving engine."""
        return LMParts(self.config, self.params, self.tokenizer, self.chat_template, self.eos_ids)

    def generate(
        self,
        prompts: Any,
        max_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        on_token: Callable[[Any], None] | None = None,
        stream: bool = False,
        **options: Any,
    ) -> Any:
        """Complete a prompt, a chat (list of ``{"role", "content"}``), token ids, or a list of them (a batch).

        Returns an ``lm.Completion`` (a list for a batch); ``on_token`` gets each ``lm.Delta`` as it is
        made; ``stream=True`` returns the iterator of deltas instead. Greedy at temperature 0; the same
        ``seed`` gives the same tokens. See :func:`aios_lab.lm.generate`."""
        from ..lm import generate

        settings = dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, stop=stop)
        if stream:
            if on_token is not None:
                raise InvalidInput("give on_token or stream=True, not both")
            return self.stream(prompts, **settings, **options)
        return generate(self.params, self.config, self.tokenizer, prompts, on_token=on_token, **settings, **options)

    def stream(self, prompts: Any, **settings: Any) -> Iterator[Any]:
        """The ``lm.Delta`` of every generated token as it is made (see :meth:`generate`)."""
        from ..lm import stream

        return stream(self.params, self.config, self.tokenizer, prompts, **settings)

    def __repr__(self) -> str:
        cfg = self.config
        return (
            f"<LoadedLM {self.ref} {cfg.family} {cfg.num_layers} layers, context {cfg.context}, "
            f"vocab {cfg.vocab_size}, {self.dtype}>"
        )


def load_lm(
    model: str,
    version: int | str | None = None,
    *,
    dtype: str | None = "float32",
    stacked: bool = False,
    device: Any = None,
    audit: bool = True,
) -> LoadedLM:
    """Verify and load a language-model version (``version``: a number, an alias, or None for the newest).

    ``dtype``: what the parameters become (None keeps the stored dtype); ``stacked``: per-layer tensors
    on a leading layer axis (the training layout) instead of a tuple of layers (the generation layout);
    ``device``: a jax Device or Sharding (default: the default device), or ``"host"`` for numpy arrays.
    Anything other than a language model is a one-line InvalidInput."""
    from .load import load

    return load(model, version, device=device, audit=audit, dtype=dtype, stacked=stacked)


_KEEP = 2  # language models kept loaded by cached_lm (the newest used)
_cache: OrderedDict[tuple[str, int, str], LoadedLM] = OrderedDict()
_cache_lock = threading.Lock()


def cached_lm(model: str, version: int | str | None = None) -> LoadedLM:
    """:func:`load_lm` with the last few versions kept loaded in this process (``%aios generate`` and
    ``chat`` in a notebook): versions are immutable, so one load per version (and manifest) is enough."""
    mv = get(model, version)
    key = (mv.name, mv.version, mv.manifest_sha256)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    m = load_lm(mv.name, mv.version)
    with _cache_lock:
        _cache[key] = m
        while len(_cache) > _KEEP:
            _cache.popitem(last=False)
    return m


def load_lm_version(
    mv: ModelVersion,
    listed: dict[str, dict],
    definition: dict[str, Any],
    *,
    device: Any = None,
    dtype: str | None = "float32",
    stacked: bool = False,
) -> LoadedLM:
    """The :class:`LoadedLM` of ``mv`` (its manifest ``listed`` already checked; see :func:`load_lm`)."""
    import json

    from .load import read_verified

    cfg = lm_artifact.spec_config(definition["spec"])
    small = {n: read_verified(mv, n, listed) for n in sorted(listed) if n != PARAMS}
    tokenizer = _tokenizer(mv, cfg)
    want = None if dtype is None else np.dtype(_dtype(dtype))
    if definition["spec"].get("adapters"):  # LoRA adapters kept apart from their base version
        params = _place_tree(_with_adapters(mv, listed, definition["spec"]), _placer(cfg, want, stacked, device))
    else:
        params = read_params(
            str(Path(mv.path) / PARAMS),
            listed[PARAMS]["sha256"],
            listed[PARAMS]["bytes"],
            _placer(cfg, want, stacked, device),
            f"model {mv.ref}",
        )
    params = _finish(params, cfg, want, stacked, device)
    leaves = [a for a in _walk(params) if lm_artifact.is_float(a.dtype)]
    return LoadedLM(
        record=mv,
        definition=definition,
        config=cfg,
        params=params,
        tokenizer=tokenizer,
        signature=json.loads(small["signature.json"]),
        metrics=json.loads(small["metrics.json"]),
        lineage=json.loads(small["lineage.json"]),
        tokenizer_sha=listed[lm_artifact.TOKENIZER]["sha256"],
        dtype=np.dtype(leaves[0].dtype).name if leaves else str(definition.get("dtype")),
        stacked=stacked,
    )


def load_tokenizer(model: str, version: int | str | None = None) -> tuple[Any, ModelVersion, str]:
    """``(tokenizer, version record, tokenizer sha256)`` of a language-model version, its files verified
    and its parameters not read (for tokenizing datasets)."""
    import json

    from .load import manifest, read_verified

    mv = get(model, version)
    listed = manifest(mv)
    definition = json.loads(read_verified(mv, "model.json", listed))
    if not lm_artifact.is_lm(definition) or lm_artifact.TOKENIZER not in listed:
        raise InvalidInput(f"{mv.ref} is not a language model with a tokenizer; `%aios model import` makes one")
    for name in lm_artifact.HF_FILES:
        if name in listed:
            read_verified(mv, name, listed)
    cfg = lm_artifact.spec_config(definition["spec"])
    return _tokenizer(mv, cfg), mv, listed[lm_artifact.TOKENIZER]["sha256"]


def _tokenizer(mv: ModelVersion, cfg: Any) -> Any:
    from ..lm import Tokenizer

    return Tokenizer.from_dir(mv.path, cfg)


def _dtype(name: Any) -> Any:
    from ..compress import params_file

    try:
        dt = np.dtype(name) if not isinstance(name, str) or name != "bfloat16" else params_file.DTYPES["BF16"]
    except TypeError:
        raise InvalidInput(f"dtype {name!r}: use float32, bfloat16 or float16") from None
    if not lm_artifact.is_float(dt):
        raise InvalidInput(f"dtype {name!r}: use float32, bfloat16 or float16")
    return dt


def _put(a: np.ndarray, device: Any) -> Any:
    if device == HOST:
        return a
    import jax

    return jax.device_put(a, device) if device is not None else jax.device_put(a)


def _placer(cfg: Any, want: np.dtype | None, stacked: bool, device: Any) -> Callable[[str, np.ndarray], Any]:
    """Each tensor, as it is read: cast, then onto the device (split per layer for the generation layout)."""

    def place(name: str, a: np.ndarray) -> Any:
        if want is not None and lm_artifact.is_float(a.dtype) and a.dtype != want:
            a = a.astype(want)
        if stacked or not name.startswith("layers/"):
            return _put(a, device)
        return [_put(np.ascontiguousarray(a[i]), device) for i in range(cfg.num_layers)]

    return place


def _finish(tree: Any, cfg: Any, want: np.dtype | None, stacked: bool, device: Any) -> Any:
    """Dequantise compressed tensors (generation runs on dense weights) and regroup layers for generation."""
    from ..compress.quant import is_q

    place = _placer(cfg, want, stacked, device)

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, f"{path}/{k}" if path else k) for k, v in node.items()}
        if is_q(node):
            dense = np.asarray(node.dequantize(np))
            return place(path, dense if want is not None else dense.astype(node.dtype))
        return node

    tree = walk(tree, "")
    if stacked:
        return tree
    per_layer: list[dict] = [{} for _ in range(cfg.num_layers)]

    def split(node: Any, keys: list[str]) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                split(v, [*keys, k])
            return
        for i, a in enumerate(node):
            target = per_layer[i]
            for k in keys[:-1]:
                target = target.setdefault(k, {})
            target[keys[-1]] = a

    split(tree["layers"], [])
    return {**tree, "layers": tuple(per_layer)}


def _with_adapters(mv: ModelVersion, listed: dict[str, dict], spec: dict[str, Any]) -> Any:
    """The dense parameters of a version that keeps LoRA adapters: its base version loaded (verified, and
    the one the adapters were trained on) with the adapters merged in, numpy on the host."""
    from ..errors import AiosError
    from ..train.lora import merge

    adapters = read_params(str(Path(mv.path) / PARAMS), listed[PARAMS]["sha256"], listed[PARAMS]["bytes"])
    base = spec["base"]
    host = load_lm(base["model"], base["version"], dtype=None, stacked=True, device=HOST, audit=False)
    if base.get("manifest_sha256") not in (None, host.record.manifest_sha256):
        raise AiosError(f"{mv.ref} holds adapters for another {host.ref} than the registry has; republish them")
    return merge(host.params, adapters, spec["adapters"])


def _place_tree(tree: Any, place: Callable[[str, np.ndarray], Any]) -> Any:
    """``place(path, array)`` on every leaf of a host tree, as ``read_params`` does while reading."""
    if isinstance(tree, dict):
        return {k: _place_tree(v, lambda p, a, k=k: place(f"{k}/{p}" if p else k, a)) for k, v in tree.items()}
    return place("", tree)


def _walk(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [a for v in tree.values() for a in _walk(v)]
    if isinstance(tree, (list, tuple)):
        return [a for v in tree for a in _walk(v)]
    return [tree]


__all__ = ["LoadedLM", "LMParts", "load_lm", "cached_lm", "load_lm_version", "load_tokenizer", "HOST"]
