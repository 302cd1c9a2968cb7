"""A Hugging Face checkpoint directory opened in one call: config, tokenizer, parameters, generation.

Everything is checked before weights are read (architecture, tokenizer vs embedding, every shard).

>>> lm = load_pretrained("path/to/checkpoint")
>>> print(lm.card)
>>> lm.generate("Hello", max_tokens=16).text
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from .card import ModelCard, card
from .config import LMConfig, read_config
from .generate import Completion, Delta, generate, stream
from .model import LanguageModel
from .safetensors_files import SafetensorsCheckpoint
from .tokenizer import Tokenizer
from .weights import iter_params, nest


@dataclass
class Pretrained:
    """A loaded language model: ``cfg``, device ``params``, ``tokenizer``; generation bound to them.

    ``params`` are in the inference layout (:func:`model.unstack`) unless loaded with ``stacked=True``;
    :func:`model.stack` turns them into the training layout."""

    cfg: LMConfig
    params: Any
    tokenizer: Tokenizer
    path: str | None = None

    @property
    def card(self) -> ModelCard:
        return card(self.cfg, self.params)

    @property
    def model(self) -> LanguageModel:
        return LanguageModel(self.cfg)

    def generate(self, prompts: Any, **kwargs: Any) -> Completion | list[Completion]:
        """See :func:`aios_lab.lm.generate.generate`."""
        return generate(self.params, self.cfg, self.tokenizer, prompts, **kwargs)

    def stream(self, prompts: Any, **kwargs: Any) -> Iterator[Delta]:
        """See :func:`aios_lab.lm.generate.stream`."""
        return stream(self.params, self.cfg, self.tokenizer, prompts, **kwargs)


def load_pretrained(path: str, dtype: Any = np.float32, stacked: bool = False) -> Pretrained:
    """Open checkpoint directory ``path``: config, tokenizer (checked against the embedding), then the
    weights, streamed one tensor at a time onto the default device as ``dtype``: per layer (the faster
    layout for generation) or, with ``stacked``, on a leading layer axis (the training layout)."""
    cfg = read_config(path)
    tokenizer = Tokenizer.from_dir(path, cfg)
    flat = {}
    with SafetensorsCheckpoint(path) as ckpt:
        for name, array in iter_params(ckpt, cfg, dtype):
            if stacked or not name.startswith("layers/"):
                flat[name] = jnp.asarray(array)
            else:  # split on the host as each tensor arrives: never the whole model twice
                flat[name] = [jnp.asarray(a) for a in array]
    params = nest({k: v for k, v in flat.items() if not isinstance(v, list)})
    if not stacked:
        per_layer: list[dict] = [{} for _ in range(cfg.num_layers)]
        for name, parts in flat.items():
            if isinstance(parts, list):
                for i, a in enumerate(parts):
                    _put(per_layer[i], name.split("/")[1:], a)
        params["layers"] = tuple(per_layer)
    return Pretrained(cfg, params, tokenizer, path)


def _put(tree: dict, keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = value


__all__ = ["Pretrained", "load_pretrained"]
