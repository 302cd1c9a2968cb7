"""Text generation for prompts or chats, batched and ragged, streamed through a callback or an iterator.

The device runs the decode loop in chunks (:func:`decode.decode_loop`), the host turns each chunk into
text: it detokenises incrementally, holds back half-written UTF-8 and anything that could still become
a stop string, and cuts a row at its first stop string. The next chunk is already running while the
host reads the last one.

>>> out = generate(params, cfg, tok, "Once upon a time", max_tokens=32, temperature=0.7, seed=1)
>>> out.text, out.finish_reason
>>> for delta in stream(params, cfg, tok, [[{"role": "user", "content": "Hi"}]]):
...     print(delta.text, end="")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from ..errors import AiosError
from .cache import cache_for
from .config import LMConfig
from .decode import DecodeState, bucket, decode_loop, prefill
from .textstream import TextStream
from .tokenizer import Tokenizer

CHUNK = 16  # decode steps per device call: as fast as longer chunks on CPU, and tokens stream in bursts of 16


@dataclass
class Completion:
    """One prompt's result: text (stop string and eos excluded), its token ids, and why it ended."""

    text: str
    tokens: list[int]
    finish_reason: str  # "stop" (eos or a stop string) | "length" (max_tokens or the context)
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)


@dataclass
class Delta:
    """One streamed step of one prompt: the token sampled and the text it made visible (may be "")."""

    index: int
    token: int | None
    text: str
    finish_reason: str | None = None


def is_chat(x: Any) -> bool:
    """Is ``x`` one chat (a list of message dicts)?"""
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(m, dict) for m in x)


def _is_ids(x: Any) -> bool:
    return isinstance(x, (list, tuple, np.ndarray)) and len(x) > 0 and all(isinstance(t, (int, np.integer)) for t in x)


def normalise(prompts: Any) -> tuple[list[Any], bool]:
    """``(items, single)``: a prompt, a chat or token ids is one item; a list of them is a batch."""
    if isinstance(prompts, str) or is_chat(prompts) or _is_ids(prompts):
        return [prompts], True
    if isinstance(prompts, (list, tuple)) and prompts:
        return list(prompts), False
    raise AiosError(
        "give a prompt string, a chat (a list of {'role', 'content'} dicts), token ids, or a non-empty list of those"
    )


def encode_prompts(tokenizer: Tokenizer, items: Sequence[Any]) -> list[list[int]]:
    """Token ids for each item: strings with the tokenizer's special tokens, chats through the chat template."""
    out = []
    for item in items:
        if isinstance(item, str):
            ids = tokenizer.encode(item)
        elif is_chat(item):
            ids = tokenizer.encode_chat(list(item), add_generation_prompt=True)
        elif _is_ids(item):
            ids = [int(t) for t in item]
        else:
            raise AiosError(f"cannot generate from a {type(item).__name__}: give a string, a chat or token ids")
        if not ids:
            raise AiosError("a prompt encodes to no tokens; give some text")
        out.append(ids)
    return out


def _per_row(value: Any, n: int, name: str) -> list:
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) != n:
            raise AiosError(f"{name} has {len(value)} values for {n} prompts")
        return list(value)
    return [value] * n


def stream(
    params: Any,
    cfg: LMConfig,
    tokenizer: Tokenizer,
    prompts: Any,
    max_tokens: int = 128,
    temperature: float | Sequence[float] = 0.0,
    top_p: float | Sequence[float] = 1.0,
    top_k: int | Sequence[int] = 0,
    seed: int | Sequence[int] | None = None,
    stop: str | Sequence[str] | None = None,
    chunk: int = CHUNK,
    ignore_eos: bool = False,
) -> Iterator[Delta]:
    """Generate for ``prompts`` and yield a :class:`Delta` per sampled token (``finish_reason`` on each
    prompt's last). Settings are scalars or one value per prompt; ``seed=None`` draws a random seed;
    ``ignore_eos`` runs every row to ``max_tokens`` (benchmarks, parity checks).
    A prompt that does not fit the model's context is a one-line AiosError, raised before any work."""
    items, _ = normalise(prompts)
    rows_ids = encode_prompts(tokenizer, items)
    n = len(rows_ids)
    if int(max_tokens) < 1:
        raise AiosError(f"max_tokens must be at least 1 (got {max_tokens})")
    for i, ids in enumerate(rows_ids):
        if len(ids) >= cfg.context:
            raise AiosError(f"prompt {i} has {len(ids)} tokens but the model's context is {cfg.context}: shorten it")
        if max(ids) >= cfg.vocab_size or min(ids) < 0:
            raise AiosError(f"prompt {i} holds token ids outside the model's vocabulary of {cfg.vocab_size}")
    temps = [float(t) for t in _per_row(temperature, n, "temperature")]
    if any(t < 0 for t in temps):
        raise AiosError("temperature must be 0 (greedy) or more")
    tops = [float(p) for p in _per_row(top_p, n, "top_p")]
    if any(not 0.0 < p <= 1.0 for p in tops):
        raise AiosError("top_p must be in (0, 1]")
    topk = [int(k) for k in _per_row(top_k, n, "top_k")]
    seeds = [
        int(s) if s is not None else int(np.random.default_rng().integers(2**31)) for s in _per_row(seed, n, "seed")
    ]
    stops = tuple(s for s in ([stop] if isinstance(stop, str) else (stop or ())) if s)
    eos = () if ignore_eos else tuple(tokenizer.eos_ids)
    yield from _run(params, cfg, tokenizer, rows_ids, int(max_tokens), temps, tops, topk, seeds, stops, chunk, eos)


def _run(params, cfg, tokenizer, rows_ids, max_tokens, temps, tops, topk, seeds, stops, chunk, eos_ids):
    n = len(rows_ids)
    lengths = np.array([len(r) for r in rows_ids], np.int32)
    budget = np.minimum(max_tokens, cfg.context - lengths).astype(np.int32)
    max_len = min(cfg.context, -(-int((lengths + budget).max()) // 64) * 64)
    width = min(bucket(int(lengths.max())), max_len)
    padded = np.zeros((n, width), np.int32)
    for i, r in enumerate(rows_ids):
        padded[i, : len(r)] = r
    params = jax.device_put(params)
    eos = np.full(max(8, -(-len(eos_ids) // 8) * 8), -2, np.int32)  # a multiple of 8: one compiled shape
    eos[: len(eos_ids)] = list(eos_ids)
    eos_set = set(eos_ids)

    cache = cache_for(params, cfg, n, max_len)
    cache, logits = prefill(params, cfg, cache, padded, lengths, np.arange(n, dtype=np.int32))
    state = DecodeState(
        logits=logits,
        positions=lengths,
        active=np.ones(n, bool),
        steps=np.zeros(n, np.int32),
        budget=budget,
        seeds=np.array(seeds, np.uint32),
        temperature=np.array(temps, np.float32),
        top_p=np.array(tops, np.float32),
        top_k=np.array(topk, np.int32),
    )
    rows = [TextStream(tokenizer, stops, int(budget[i]), eos_set) for i in range(n)]
    sampling = any(t > 0 for t in temps)
    pending = decode_loop(params, cfg, cache, state, eos, chunk, sampling, np.ones(n, bool))
    while True:
        cache, state, out = pending
        alive = np.array([r.finish is None for r in rows])
        pending = decode_loop(params, cfg, cache, state, eos, chunk, sampling, alive)  # runs while we read this one
        out = np.asarray(out)
        for i, row in enumerate(rows):
            for t in out[i]:
                if t < 0 or row.finish:
                    break
                yield Delta(i, int(t), row.add(int(t)), row.finish)
        if all(r.finish for r in rows):
            return
        if (out < 0).all():  # the device stopped every row (it never does before the host does): end cleanly
            for i, row in enumerate(rows):
                if not row.finish:
                    yield Delta(i, None, row.close(), row.finish)
            return


def generate(
    params: Any,
    cfg: LMConfig,
    tokenizer: Tokenizer,
    prompts: Any,
    max_tokens: int = 128,
    temperature: float | Sequence[float] = 0.0,
    top_p: float | Sequence[float] = 1.0,
    top_k: int | Sequence[int] = 0,
    seed: int | Sequence[int] | None = None,
    stop: str | Sequence[str] | None = None,
    on_token: Callable[[Delta], None] | None = None,
    chunk: int = CHUNK,
    ignore_eos: bool = False,
) -> Completion | list[Completion]:
    """Complete ``prompts`` (a string, a chat, token ids, or a list of them); one Completion per prompt,
    or just one for a single prompt. ``on_token`` receives every :class:`Delta` as it is produced.
    Greedy when ``temperature`` is 0; the same ``seed`` gives the same tokens, alone or in any batch."""
    items, single = normalise(prompts)
    rows_ids = encode_prompts(tokenizer, items)
    texts: dict[int, list[str]] = {i: [] for i in range(len(items))}
    tokens: dict[int, list[int]] = {i: [] for i in range(len(items))}
    finish: dict[int, str] = {}
    eos = () if ignore_eos else set(tokenizer.eos_ids)
    for d in stream(
        params, cfg, tokenizer, rows_ids, max_tokens, temperature, top_p, top_k, seed, stop, chunk, ignore_eos
    ):
        texts[d.index].append(d.text)
        if d.token is not None and not (d.finish_reason == "stop" and d.token in eos):
            tokens[d.index].append(d.token)
        if d.finish_reason:
            finish[d.index] = d.finish_reason
        if on_token is not None:
            on_token(d)
    out = [
        Completion("".join(texts[i]), tokens[i], finish.get(i, "length"), len(rows_ids[i])) for i in range(len(items))
    ]
    return out[0] if single else out


__all__ = ["generate", "stream", "Completion", "Delta", "encode_prompts", "normalise", "is_chat", "CHUNK"]
