"""aios_lab.lm against transformers, on the tiny checkpoints tests/fixtures/make_hf_fixtures.py recorded.

For every family: fp32 logits within 1e-4, identical greedy tokens for 32 steps (transformers used its
own KV cache), and ragged prompts batched together giving each prompt's own tokens.
"""

import json
import os
from functools import cache

import numpy as np
import pytest

from aios_lab import lm

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "hf")
FAMILIES = ["llama", "llama3", "mistral", "qwen2", "qwen3", "gemma3", "gpt2"]
WIDTH = 80  # five prompts padded to one width: one compilation of the forward pass per family


@cache
def fixture(family):
    path = os.path.join(FIXTURES, family)
    with open(os.path.join(path, "expected.json"), encoding="utf-8") as f:
        expected = json.load(f)
    return lm.load_pretrained(path), expected, dict(np.load(os.path.join(path, "expected.npz")))


@cache
def stacked(family):
    """The training layout (layers on a leading axis, run by lax.scan) of the same parameters."""
    return lm.load_pretrained(os.path.join(FIXTURES, family), stacked=True).params


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers(family):
    m, expected, arrays = fixture(family)
    assert m.cfg.architecture == expected["architecture"]
    rows = [p["ids"] for p in expected["prompts"]] + expected["batch"]["ids"]
    tokens = np.zeros((len(rows), WIDTH), np.int32)
    segments = np.zeros((len(rows), WIDTH), np.int32)  # right padding in a segment of its own
    for i, r in enumerate(rows):
        tokens[i, : len(r)], segments[i, : len(r)] = r, 1
    logits = np.asarray(lm.logits(stacked(family), m.cfg, tokens, segment_ids=segments))  # scanned layers
    assert logits.dtype == np.float32 and logits.shape == (5, WIDTH, m.cfg.vocab_size)
    for i, r in enumerate(rows[:2]):
        want = arrays[f"logits_{i}"]
        assert np.abs(logits[i, : len(r)] - want).max() <= 1e-4, family


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_and_ragged_batch_match_transformers(family):
    m, expected, _ = fixture(family)
    prompts = [p["ids"] for p in expected["prompts"]] + expected["batch"]["ids"]
    assert len({len(p) for p in prompts}) > 2  # ragged
    # unrolled layers (the inference layout); gemma3's six layers scanned (stacked), which compiles quicker
    params = stacked(family) if family == "gemma3" else m.params
    out = lm.generate(params, m.cfg, m.tokenizer, prompts, max_tokens=32, ignore_eos=True)
    for done, p in zip(out, expected["prompts"]):
        assert done.tokens == p["greedy"], family  # 32 greedy steps
        assert done.finish_reason == "length" and done.prompt_tokens == len(p["ids"])
    batch = expected["batch"]
    assert batch["greedy"] == batch["single"]  # transformers: batched (left-padded) == one at a time
    for done, want in zip(out[2:], batch["single"]):
        assert done.tokens[:16] == want, family
