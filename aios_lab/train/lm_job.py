"""A language-model job's checkpoints as models: dense parameters (LoRA adapters merged into their base),
generation, evaluation and what publishing needs.

Readers go through the jobs API (``job.config``, ``job.checkpoints()``, ``job.params(step)``) and the
registry (the base version the job pinned), never through the job's files.

>>> job = aios.job("tune")
>>> job.generate([{"role": "user", "content": "What is 2+3?"}], max_tokens=8).text
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import metric_names as mn
from ..errors import InvalidInput, NotFound
from . import lm_model

_KEEP = 2  # checkpoints kept ready for generation in this process (the newest used)
_ready: OrderedDict[tuple, Any] = OrderedDict()
_lock = threading.Lock()


def spec_of(job: Any) -> tuple[dict, dict | None]:
    """``(lm spec, lora settings or None)`` of a language-model job; a one-line InvalidInput for other jobs."""
    train = job.config["train"]
    spec = train.get("model")
    if not isinstance(spec, dict) or spec.get("kind") != "lm":
        raise InvalidInput(
            f"job {job.name!r} does not train an imported language model; "
            "generate from one started with --model NAME of a model from `%aios model import`"
        )
    return spec, train.get("lora")


def dense_params(spec: dict, lora: dict | None, params: Any) -> Any:
    """A checkpoint's parameters as the full model's (stacked, numpy): adapters merged into the base."""
    if lora is None:
        return params
    from . import lora as lora_lib

    return lora_lib.merge(lm_model.load_base(spec, dtype="float32"), params, lora)


def checkpoint_params(job: Any, checkpoint: str | int | None = "latest") -> tuple[dict, int, Any]:
    """``(spec, step, dense params)`` of a language-model job's checkpoint."""
    spec, lora = spec_of(job)
    step = job.checkpoint_step(checkpoint)
    return spec, step, dense_params(spec, lora, job.params(step))


class Generator:
    """What ``job.generate`` runs on: a checkpoint's dense parameters (generation layout, on the device),
    the config and the base version's tokenizer."""

    def __init__(self, spec: dict, params: Any):
        import jax

        from ..lm import unstack
        from ..registry import load_tokenizer

        self.config = lm_model.config_of(spec)
        self.params = jax.device_put(unstack(params))
        self.tokenizer, _, _ = load_tokenizer(spec["base"]["model"], spec["base"]["version"])

    def generate(self, prompts: Any, on_token: Callable | None = None, stream: bool = False, **settings: Any) -> Any:
        from ..lm import generate, stream as stream_lm

        if stream:
            if on_token is not None:
                raise InvalidInput("give on_token or stream=True, not both")
            return stream_lm(self.params, self.config, self.tokenizer, prompts, **settings)
        return generate(self.params, self.config, self.tokenizer, prompts, on_token=on_token, **settings)


def generator(job: Any, checkpoint: str | int | None = "latest") -> Generator:
    """The :class:`Generator` of a job's checkpoint, kept for the next call (checkpoints do not change)."""
    spec, lora = spec_of(job)
    step = job.checkpoint_step(checkpoint)
    key = (job.name, job.refresh()["created"], step)  # a job deleted and made again is another job
    with _lock:
        if key in _ready:
            _ready.move_to_end(key)
            return _ready[key]
    made = Generator(spec, dense_params(spec, lora, job.params(step)))
    with _lock:
        _ready[key] = made
        while len(_ready) > _KEEP:
            _ready.popitem(last=False)
    return made


def generate(
    job: Any,
    prompts: Any,
    max_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
    stop: str | list[str] | None = None,
    on_token: Callable[[Any], None] | None = None,
    stream: bool = False,
    checkpoint: str | int | None = "latest",
    **options: Any,
) -> Any:
    """``job.generate``: complete prompts or chats from a job's checkpoint, as the registry handle's
    ``generate`` does (adapters merged into the base first)."""
    settings = dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, stop=stop)
    return generator(job, checkpoint).generate(prompts, on_token=on_token, stream=stream, **settings, **options)


def evaluate(job: Any, split: str = "test", checkpoint: str | int = "latest", batch: int = 64) -> dict[str, Any]:
    """A checkpoint's loss, next-token accuracy over the learned tokens and perplexity on a split of the job's
    tokenized dataset, here on the CPU."""
    import jax

    from ..data import get
    from . import models, step as steplib
    from .lm_data import view

    cfg = job.config
    ds = view(get(cfg["dataset"], cfg["dataset_version"]))
    if split not in ds.splits:
        raise NotFound(f"dataset {ds.name!r} has no {split!r} split; it has {', '.join(ds.splits)}")
    spec, step, params = checkpoint_params(job, checkpoint)
    model = models.build(spec, "lm", int(cfg["n_outputs"]), tuple(ds.feature_shape))
    sums = jax.jit(lambda p, x, y: [a.sum() for a in steplib.token_sums("lm", model.apply(p, x), y)])
    x, y = ds.load(split)
    totals = np.zeros(3)
    for i in range(0, len(x), batch):
        totals += [float(v) for v in sums(params, x[i : i + batch], y[i : i + batch])]
    loss = float(totals[0] / max(totals[2], 1))
    return {
        mn.SPLIT: split,
        "rows": int(len(x)),
        "checkpoint": checkpoint,
        "step": step,
        mn.LOSS: loss,
        mn.ACCURACY: float(totals[1] / max(totals[2], 1)),
        mn.PERPLEXITY: mn.perplexity(loss),
    }


def publish_parts(job: Any, params: Any, adapters: bool = False, merged: bool = False) -> tuple[dict, Any, dict]:
    """``(spec, params, lineage)`` to publish a language-model job's checkpoint: adapters merged into their
    base (the default), or kept as they are with ``adapters=True`` (the version then names its base and
    ``registry.load`` merges them); ``merged``: ``params`` are whole already (a compressed variant). The
    lineage names the base version."""
    spec, lora = spec_of(job)
    base = spec["base"]
    lineage = {
        "base_model": base["model"],
        "base_version": base["version"],
        "base_manifest_sha256": base.get("manifest_sha256"),
        "lora": lora,
    }
    out = {k: v for k, v in spec.items() if k != "base"}
    out["base"] = {"model": base["model"], "version": base["version"]}
    if adapters:
        if lora is None:
            raise InvalidInput(f"job {job.name!r} trained every weight, not adapters; publish it without --adapters")
        out["base"]["manifest_sha256"] = base.get("manifest_sha256")
        out["adapters"] = lora
        return out, params, lineage
    return out, params if merged else dense_params(spec, lora, params), lineage


__all__ = [
    "spec_of",
    "dense_params",
    "checkpoint_params",
    "generator",
    "generate",
    "evaluate",
    "publish_parts",
]
