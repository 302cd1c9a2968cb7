"""The serving engine on its own (no HTTP): the same tokens as ``lm.generate`` for families unlike Llama, the wait
queue's limit and the context budget refused before anything runs, cancellation and retirement.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aios_lab.errors import InvalidInput
from aios_lab.serve.errors import Overloaded
from aios_lab.serve.llm.engine import Engine
from aios_lab.serve.llm.errors import Retired
from aios_lab.serve.llm.metrics import EngineStats
from aios_lab.serve.llm.model import from_dir
from aios_lab.serve.llm.params import Sampling

pytestmark = pytest.mark.timeout(180)

FIXTURES = Path(__file__).parent / "fixtures" / "hf"
PROMPTS = ["The quick brown fox", "Once upon a time in a land", "A"]


async def finish(group) -> tuple[list[str], list[str]]:
    texts, reasons = [""] * len(group.seqs), [""] * len(group.seqs)
    while not group.finished and not group.cancelled:
        for i, text, f in await group.next():
            texts[i] += text
            reasons[i] = f or reasons[i]
    return texts, reasons


@pytest.mark.parametrize("family", ["gemma3", "gpt2"])  # sliding windows and sandwich norms; learned positions
def test_engine_tokens_match_lm_generate(family):
    from aios_lab import lm

    model = from_dir(str(FIXTURES / family), family)
    engine = Engine(model, slots=4, max_len=48)  # prompt buckets 16, 32, 48: few compilations
    engine.start()
    try:

        async def run():
            groups = [engine.group([model.encode(p)], Sampling(max_tokens=24, temperature=0.0)) for p in PROMPTS]
            for g in groups:
                engine.submit(g)
            return [await finish(g) for g in groups]

        got = asyncio.run(run())
    finally:
        engine.stop()
    ref = lm.generate(model.params, model.cfg, model.tokenizer, PROMPTS, max_tokens=24)
    assert [t[0][0] for t in got] == [c.text for c in ref]
    assert [t[1][0] for t in got] == [c.finish_reason for c in ref]


def test_queue_limit_and_context_budget_are_refused_up_front():
    model = from_dir(str(FIXTURES / "llama"), "llama")
    engine = Engine(model, slots=2, max_len=64, max_waiting=1)  # not started: nothing is taken off the queue

    async def run():
        ids = model.encode("Hello there")
        engine.submit(engine.group([ids], Sampling(max_tokens=8, n=3)))  # 2 would get a slot, 1 waits
        with pytest.raises(Overloaded, match="all 2 slots") as exc:
            engine.submit(engine.group([ids], Sampling(max_tokens=8)))
        assert exc.value.status == 429 and (b"retry-after", b"1") in exc.value.headers
        with pytest.raises(InvalidInput, match="context of 64 tokens; ask for at most") as exc:
            engine.group([ids], Sampling(max_tokens=64))
        assert exc.value.param == "max_tokens"
        with pytest.raises(InvalidInput, match="context here is 64 tokens"):
            engine.group([ids * 40], Sampling(max_tokens=1))
        with pytest.raises(InvalidInput, match="outside this model's vocabulary"):
            engine.group([[model.cfg.vocab_size]], Sampling(max_tokens=1))
        assert engine.group([ids], Sampling()).seqs[0].budget == 64 - len(ids)  # no max_tokens: the rest

    asyncio.run(run())
    engine.retire()  # never started: frees at once
    assert engine.cache is None


def test_cancel_frees_the_slot_and_retire_finishes_then_stops():
    model = from_dir(str(FIXTURES / "llama"), "llama")
    stats = EngineStats(None, "llama", "1")
    engine = Engine(model, slots=2, max_len=128, stats=stats)
    stopped = []
    engine.on_stop = stopped.append
    engine.start()
    ids = model.encode("Tell me a story")

    async def run():
        g = engine.group([ids], Sampling(max_tokens=100, temperature=0.0))
        engine.submit(g)
        await g.next()  # it holds a slot and has produced text
        g.cancel()
        for _ in range(200):
            if engine.running == 0:
                break
            await asyncio.sleep(0.01)
        assert engine.running == 0 and g.seqs[0].finish == "abort" and g.seqs[0].generated < 100

        long = engine.group([ids], Sampling(max_tokens=60, temperature=0.0))
        engine.submit(long)
        engine.retire()  # takes nothing new, finishes what it has
        with pytest.raises(Retired):
            engine.submit(engine.group([ids], Sampling(max_tokens=4)))
        texts, reasons = await finish(long)
        return reasons

    try:
        assert asyncio.run(run()) == ["length"]
        engine._thread.join(10)
        assert not engine._thread.is_alive() and stopped == [engine] and engine.cache is None
        assert stats.finished_total == 2 and stats.generated_total >= 61
    finally:
        engine.stop()
