"""Language-model datasets from ``jsonl:PATH``, tokenized with a registry model's tokenizer.

``%aios dataset NAME --from jsonl:PATH --tokenizer MODEL[:V] --format text|completion|chat [--block N] [--pack]``.
Documents are split (by the seed) before packing, so no document crosses splits. Each split holds
``x``/``y`` (int32 ``[rows, block]``, y is x shifted by one) and the extra arrays ``mask`` (uint8, 1
where ``y`` is learned) and ``segments`` (int32, document number within the row, 0 = padding); see
:mod:`aios_lab.data.packing`. The schema records the tokenizer (model, version, sha256 of
tokenizer.json) so training can refuse a dataset made for another tokenizer (:func:`check_tokenizer`).

>>> ds = aios.dataset("chats", "jsonl:chats.jsonl", tokenizer="qwen", format="chat", block=256, pack=True)
>>> ds.arrays("train"), ds.extra_arrays("train")["mask"]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidInput
from . import jsonl, lm_tokens, packing, split as splits

DEFAULT_BLOCK = 2048


def tokenize(
    source: str,
    tokenizer: str,
    fmt: str | None,
    block: int | None,
    pack: bool,
    fractions: dict[str, float],
    seed: int,
) -> tuple[dict[str, tuple], dict[str, Any], str]:
    """``(parts, schema, label)`` of a tokenized dataset; nothing is written (one-line errors on bad input)."""
    from ..registry import load_tokenizer, parse_ref

    kind, _, pattern = source.strip().partition(":")
    if kind != "jsonl" or not pattern:
        raise InvalidInput("--tokenizer tokenizes jsonl:PATH sources; give --from jsonl:PATH")
    fmt = jsonl.check_format(fmt)
    name, version = parse_ref(tokenizer, "--tokenizer")
    tok, mv, sha = load_tokenizer(name, version)
    context = _context(mv)
    if block is not None and (not isinstance(block, (int, np.integer)) or block < 1):
        raise InvalidInput(f"--block must be a positive number of tokens, got {block!r}")
    if block is not None and block > context:
        raise InvalidInput(f"--block {block} is longer than {mv.ref}'s context of {context} tokens; use at most that")
    records = jsonl.read(pattern, fmt)
    docs = [lm_tokens.encode(tok, r, fmt, f"record {i + 1}") for i, r in enumerate(records)]
    longest = max(len(ids) - 1 for ids, _ in docs)
    if block is None:
        block = min(context, DEFAULT_BLOCK) if pack else min(context, max(8, -(-longest // 8) * 8))
    kept, truncated, dropped = [], 0, 0
    for doc in docs:
        doc, cut = packing.trim(doc, block)
        truncated += cut
        if len(doc[0]) < 2 or not any(doc[1][1:]):
            dropped += 1
            continue
        kept.append(doc)
    if not kept:
        raise InvalidInput(
            f"no record of jsonl:{pattern} has a token to learn within --block {block} "
            f"(--format {fmt} learns {_learns(fmt)}); check the format or raise --block"
        )
    assignment = splits.assign(len(kept), fractions, seed)
    parts, documents, learned, positions = {}, {}, {}, {}
    vocab = int(mv.signature["outputs"][0]["shape"][-1])
    for split_name, idx in assignment.items():
        rows = packing.build([kept[i] for i in idx], block, pack, tok.pad_id)
        parts[split_name] = (rows.x, rows.y, rows.extra())
        documents[split_name] = len(idx)
        learned[split_name] = int(rows.mask.sum())
        positions[split_name] = int((rows.segments > 0).sum())
    schema = {
        "task": "lm",
        "n_classes": vocab,
        "x": {"dtype": "int32", "shape": [block]},
        "y": {"dtype": "int32", "shape": [block]},
        "extra": {"mask": {"dtype": "uint8", "shape": [block]}, "segments": {"dtype": "int32", "shape": [block]}},
        "block": block,
        "packed": bool(pack),
        "format": fmt,
        "tokenizer": {
            "model": mv.name,
            "version": mv.version,
            "sha256": sha,
            "vocab_size": tok.vocab_size,
            "pad_id": tok.pad_id,
            "eos_ids": list(tok.eos_ids),
        },
        "documents": documents,
        "positions": positions,
        "learned_tokens": learned,
        "truncated": truncated,
        "dropped": dropped,
    }
    label = f"jsonl:{pattern} --tokenizer {mv.ref} --format {fmt} --block {block}" + (" --pack" if pack else "")
    return parts, schema, label


def _context(mv: Any) -> int:
    return int(mv.signature.get("context") or DEFAULT_BLOCK)


def _learns(fmt: str) -> str:
    return {"text": "every token", "completion": "the completion", "chat": "the assistant's turns"}[fmt]


def tokenizer_of(ds: Any) -> dict[str, Any] | None:
    """The tokenizer a dataset was made with (``{"model", "version", "sha256", ...}``), or None (byte-level text)."""
    return (ds.schema or {}).get("tokenizer")


def check_tokenizer(ds: Any, tokenizer_sha: Any) -> None:
    """A one-line InvalidInput unless ``ds`` was tokenized with the tokenizer whose tokenizer.json has sha256
    ``tokenizer_sha`` (a string, or anything with a ``tokenizer_sha`` attribute such as a loaded registry LM)."""
    want = getattr(tokenizer_sha, "tokenizer_sha", tokenizer_sha)
    have = tokenizer_of(ds)
    if have is None:
        raise InvalidInput(
            f"dataset {ds.ref} holds {ds.task} data that no model tokenizer made; declare it with "
            "--from jsonl:PATH --tokenizer MODEL --format text|completion|chat"
        )
    if have.get("sha256") != want:
        raise InvalidInput(
            f"dataset {ds.ref} was tokenized for another tokenizer ({have.get('model')}:v{have.get('version')}'s); "
            f"declare it again with --tokenizer set to this model"
        )


__all__ = ["tokenize", "check_tokenizer", "tokenizer_of", "DEFAULT_BLOCK"]
