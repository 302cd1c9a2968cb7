"""A one-look summary of a language model (family, parameters, layers, context, vocab, bytes), as import prints it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from .config import LMConfig
from .model import count_params

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1}


@dataclass(frozen=True)
class ModelCard:
    """What a language model is, in numbers a user checks after an import."""

    family: str
    architecture: str
    parameters: int
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    context: int
    vocab: int
    bytes: int
    dtype: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.family} ({self.architecture}): {_count(self.parameters)} parameters, {self.layers} layers, "
            f"hidden {self.hidden}, {self.heads} heads ({self.kv_heads} kv), context {self.context}, "
            f"vocab {self.vocab}, {_size(self.bytes)} ({self.dtype})"
        )


def card(cfg: LMConfig, params: Any = None) -> ModelCard:
    """The card of ``cfg``; bytes and dtype from ``params`` when given, else from the checkpoint's dtype."""
    n = count_params(cfg)
    if params is not None:
        leaves = jax.tree.leaves(params)
        nbytes = int(sum(np.dtype(a.dtype).itemsize * int(np.prod(a.shape)) for a in leaves))
        dtype = str(np.dtype(leaves[0].dtype)) if leaves else cfg.dtype
    else:
        dtype = cfg.dtype
        nbytes = n * DTYPE_BYTES.get(cfg.dtype, 4)
    return ModelCard(
        cfg.family,
        cfg.architecture,
        n,
        cfg.num_layers,
        cfg.hidden_size,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.context,
        cfg.vocab_size,
        nbytes,
        dtype,
    )


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def _size(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


__all__ = ["ModelCard", "card"]
