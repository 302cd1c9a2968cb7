"""Packing, padding, the KV cache, slots for a serving engine, sampling seeds, stop strings, streaming.

Calls reuse the shapes of tests/test_lm_parity.py (the five fixture prompts, 32 new tokens, forward at
width 48) so that compiled functions are shared and the whole file stays quick.
"""

import json
import os
from functools import cache

import jax.numpy as jnp
import numpy as np
import pytest

from aios_lab import lm
from aios_lab.errors import AiosError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "hf")
WIDTH = 80  # the parity test's forward shape: [5, 80]


@cache
def fixture(family):
    path = os.path.join(FIXTURES, family)
    with open(os.path.join(path, "expected.json"), encoding="utf-8") as f:
        expected = json.load(f)
    return lm.load_pretrained(path), expected


@cache
def stacked(family):
    """The training layout of the same parameters (layers scanned, not unrolled)."""
    return lm.load_pretrained(os.path.join(FIXTURES, family), stacked=True).params


def prompts(expected):
    return [p["ids"] for p in expected["prompts"]] + expected["batch"]["ids"]


def forward(family, rows, segments=None, positions=None):
    """Logits of up to five rows padded to WIDTH (the parity test's shape and layout)."""
    m = fixture(family)[0]
    tokens = np.zeros((5, WIDTH), np.int32)
    seg = np.zeros((5, WIDTH), np.int32)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
        seg[i, : len(r)] = 1 if segments is None else segments[i]
    pos = None if positions is None else jnp.asarray(positions)
    return np.asarray(lm.logits(stacked(family), m.cfg, tokens, segment_ids=seg, positions=pos))


@pytest.mark.parametrize("family", ["gemma3", "gpt2"])
def test_packed_documents_never_see_each_other(family):
    m, exp = fixture(family)
    a, b = exp["prompts"][0]["ids"][:20], exp["batch"]["ids"][1][:14]  # gemma3: both beyond its window of 6
    packed = forward(family, [a + b], segments=[[1] * len(a) + [2] * len(b)])[0]
    alone = forward(family, [a, b])
    np.testing.assert_allclose(packed[: len(a)], alone[0, : len(a)], atol=1e-5)
    np.testing.assert_allclose(packed[len(a) : len(a) + len(b)], alone[1, : len(b)], atol=1e-5)  # positions restart
    assert (
        np.abs(forward(family, [a + b])[0, len(a) : len(a) + len(b)] - alone[1, : len(b)]).max() > 1e-2
    )  # unpacked differs


def test_left_and_right_padding_give_the_same_logits():
    m, exp = fixture("llama3")
    r = exp["batch"]["ids"][1]
    pad = WIDTH - len(r)
    tokens = np.zeros((5, WIDTH), np.int32)
    tokens[0, : len(r)], tokens[1, pad:] = r, r
    seg = np.zeros((5, WIDTH), np.int32)
    seg[0, : len(r)], seg[1, pad:] = 1, 1
    pos = np.zeros((5, WIDTH), np.int32)
    pos[0, : len(r)], pos[1, pad:] = np.arange(len(r)), np.arange(len(r))
    out = np.asarray(lm.logits(stacked("llama3"), m.cfg, tokens, segment_ids=seg, positions=pos))
    np.testing.assert_allclose(out[0, : len(r)], out[1, pad:], atol=1e-5)
    assert np.isfinite(out).all()


@pytest.mark.parametrize(("family", "layout"), [("mistral", "unstacked"), ("gemma3", "stacked")])
def test_cached_decode_logits_equal_the_full_forward(family, layout):
    """Prefill five ragged prompts (generate's shapes), then 12 decode steps each: past mistral's window
    of 8 and gemma3's of 6; every step's logits equal the full forward pass over the same tokens.
    Both layouts: stacked parameters and cache (the layer scan) and per-layer ones (unrolled)."""
    m, exp = fixture(family)
    params = stacked(family) if layout == "stacked" else m.params
    rows = prompts(exp)
    lengths = np.array([len(r) for r in rows], np.int32)
    tokens = np.zeros((5, 64), np.int32)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
    cache = lm.cache_for(params, m.cfg, 5, 128)
    cache, logits = lm.prefill(
        params, m.cfg, cache, jnp.asarray(tokens), jnp.asarray(lengths), jnp.arange(5, dtype=jnp.int32)
    )
    seqs, got = [list(r) for r in rows], [np.asarray(logits)]
    resting = [np.asarray(k[2]).copy() for k in cache.k]
    active = jnp.asarray([True, True, False, True, True])  # row 2 sits out: its slot must not change
    for _ in range(12):
        nxt = np.argmax(got[-1], -1)
        for i in (0, 1, 3, 4):
            seqs[i].append(int(nxt[i]))
        pos = np.array([len(s) - 1 for s in seqs], np.int32)
        cache, step = lm.decode_step(params, m.cfg, cache, jnp.asarray(nxt, jnp.int32), jnp.asarray(pos), active)
        got.append(np.asarray(step))
    got = np.stack(got, 1)  # [5, 13, V]
    full = forward(family, seqs)
    for i in (0, 1, 3, 4):
        n = len(rows[i])
        np.testing.assert_allclose(got[i], full[i, n - 1 : n + 12], atol=1e-4)
    for k, before in zip(cache.k, resting):  # the inactive slot was left alone
        np.testing.assert_array_equal(np.asarray(k[2]), before)


def test_a_request_decodes_the_same_alone_or_among_fifteen_others():
    """The serving engine's contract: fixed slots, one prefill per request, one decode step for all."""
    m, exp = fixture("qwen3")
    S, mine, steps = 16, 5, 10
    rng = np.random.default_rng(0)
    others = [rng.integers(3, 500, int(n)).tolist() for n in rng.integers(17, 32, S)]  # one prefill bucket
    request = exp["prompts"][1]["ids"]

    def run(requests):
        cache = lm.cache_for(m.params, m.cfg, S, 64)  # per-layer, like the unstacked params
        tokens, positions, active = np.zeros(S, np.int32), np.zeros(S, np.int32), np.zeros(S, bool)
        first = {}
        for slot, ids in requests.items():
            cache, logits = lm.prefill_into_slot(m.params, m.cfg, cache, slot, ids)
            first[slot] = np.asarray(logits)
            tokens[slot], positions[slot], active[slot] = int(np.argmax(logits)), len(ids), True
        out, all_logits = [int(tokens[mine])], [first[mine]]
        for _ in range(steps):
            cache, logits = lm.decode_step(
                m.params, m.cfg, cache, jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(active)
            )
            logits = np.asarray(logits)
            tokens = np.where(active, np.argmax(logits, -1), 0).astype(np.int32)
            positions = positions + active
            out.append(int(tokens[mine]))
            all_logits.append(logits[mine])
        return out, np.stack(all_logits)

    alone = run({mine: request})
    busy = run({**{s: others[s] for s in range(S) if s != mine}, mine: request})
    assert alone[0] == busy[0] == exp["prompts"][1]["greedy"][: steps + 1]
    np.testing.assert_array_equal(alone[1], busy[1])  # bit for bit


def test_sampling_is_seeded_per_request_and_independent_of_the_batch():
    m, exp = fixture("qwen3")
    p = prompts(exp)
    kw = dict(max_tokens=32, temperature=1.0, top_p=0.95, top_k=50, ignore_eos=True)
    one = m.generate(p, seed=[7, 1, 2, 3, 4], **kw)
    again = m.generate(p, seed=[7, 1, 2, 3, 4], **kw)
    shuffled = m.generate([p[3], p[1], p[4], p[0], p[2]], seed=[9, 8, 4, 7, 5], **kw)
    assert [c.tokens for c in one] == [c.tokens for c in again]
    assert shuffled[3].tokens == one[0].tokens and shuffled[2].tokens == one[4].tokens
    assert shuffled[0].tokens != one[3].tokens  # another seed, another sample
    assert one[0].tokens != exp["prompts"][0]["greedy"]  # it really sampled
    # top_k=1 and a tiny top_p are greedy whatever the temperature
    for cut in (dict(top_k=1), dict(top_p=1e-6)):
        out = m.generate(p, max_tokens=32, temperature=[1.5] * 5, seed=3, ignore_eos=True, **cut)
        assert out[0].tokens == exp["prompts"][0]["greedy"]


def test_stop_strings_eos_and_streaming():
    m, exp = fixture("qwen3")
    p = prompts(exp)
    full = m.generate(p, max_tokens=32, ignore_eos=True)
    text = full[0].text
    assert text == m.tokenizer.decode(exp["prompts"][0]["greedy"])
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = text.index(stop)
    deltas = []
    got = m.generate(p, max_tokens=32, ignore_eos=True, stop=["never appears", stop], on_token=deltas.append)
    assert got[0].text == text[:cut] and got[0].finish_reason == "stop"
    assert len(got[0].tokens) < 32 and got[1].tokens == full[1].tokens
    assert "".join(d.text for d in deltas if d.index == 0) == text[:cut]
    assert [d.finish_reason for d in deltas if d.index == 0][-1] == "stop"
    streamed = list(m.stream(p, max_tokens=32, ignore_eos=True))
    for i in range(5):
        mine = [d for d in streamed if d.index == i]
        assert "".join(d.text for d in mine) == full[i].text
        assert [d.token for d in mine] == full[i].tokens and mine[-1].finish_reason == "length"


def test_eos_ends_a_row_and_chats_use_the_template():
    m, exp = fixture("llama")
    greedy = exp["batch"]["greedy"][1]  # transformers ran past eos (id 2); we stop there
    eos_at = greedy.index(2)
    out = m.generate(prompts(exp), max_tokens=32)
    assert out[3].tokens == greedy[:eos_at] and out[3].finish_reason == "stop"
    assert out[0].tokens == exp["prompts"][0]["greedy"]
    chat = exp["chats"][0]
    mixed = [chat["messages"]] + prompts(exp)[1:]  # a chat among plain prompts
    done = m.generate(mixed, max_tokens=32, ignore_eos=True)[0]
    assert done.prompt_tokens == len(chat["ids"]) and len(done.tokens) == 32 and done.finish_reason == "length"


def test_bad_generation_inputs_are_one_line_errors():
    m, exp = fixture("qwen3")
    cases = [
        (list(range(3, 3 + m.cfg.context)), "context is 128"),
        ([[1, 2], []], "give a string"),
        ([], "non-empty list"),
        ([5000], "outside the model's vocabulary"),
    ]
    for bad, match in cases:
        with pytest.raises(AiosError, match=match) as err:
            m.generate(bad, max_tokens=4)
        assert "\n" not in str(err.value)
    for kw, match in (
        (dict(max_tokens=0), "at least 1"),
        (dict(temperature=-1), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(seed=[1, 2]), "2 values for 1 prompts"),
    ):
        with pytest.raises(AiosError, match=match):
            m.generate("hello", **kw)
    with pytest.raises(AiosError, match="does not fit the cache"):
        lm.prefill_into_slot(m.params, m.cfg, lm.new_cache(m.cfg, 1, 16), 0, list(range(3, 20)))


def test_text_streams_hold_back_half_characters_and_stop_prefixes():
    tok = fixture("qwen3")[0].tokenizer
    text = "Héllo wörld — ça va? 🙂 fin"
    ids = tok.encode(text)
    assert any("\ufffd" in tok.decode(ids[:i]) for i in range(len(ids)))  # some token ends mid-character
    ts = lm.TextStream(tok)
    deltas = [ts.add(t) for t in ids] + [ts.close()]
    assert "".join(deltas) == text and not any("\ufffd" in d for d in deltas) and ts.finish == "length"
    ts = lm.TextStream(tok, stops=["va? 🙂", "nowhere"], eos=[2])
    deltas = [ts.add(t) for t in ids]
    assert "".join(deltas) == "Héllo wörld — ça " and ts.finish == "stop" and ts.text == "Héllo wörld — ça "
    assert all("v" not in d for d in deltas)  # "va? 🙂" was never half-shown
    ts = lm.TextStream(tok, budget=3, eos=[2])
    assert "".join(ts.add(t) for t in ids[:5]) == tok.decode(ids[:3]) and ts.finish == "length"
    ts = lm.TextStream(tok, eos=[2])
    assert ts.add(ids[0]) + ts.add(2) == tok.decode(ids[:1]) and ts.finish == "stop" and ts.tokens == ids[:1]
