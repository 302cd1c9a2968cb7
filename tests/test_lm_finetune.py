"""Fine-tuning imported language models: full (from the weights of --init-from, masked loss over packed
documents, fsdp) and LoRA (adapters only over a frozen int8 base, bf16, remat), a LoRA job killed with -9 that
resumes bitwise, publishing merged or as adapters, compressing with perplexity, generating from a job, bad input."""

import json
import os
import random
import signal

import jax
import numpy as np
import pytest
from IPython.core.error import UsageError

import aios_lab as aios
from aios_lab import lm, metric_names as mn, registry
from aios_lab.catalog import catalog
from aios_lab.data.loader import Loader
from aios_lab.errors import AiosError, InvalidInput
from aios_lab.train import models
from aios_lab.train.checkpoints import Checkpoints
from aios_lab.train.lm_data import view
from aios_lab.train.trainer import TrainConfig, train

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "hf")
QUESTIONS = [(a, b) for a in range(10) for b in range(10)]


def chats(home, name="chats", model="qwen", block=64):
    """``model`` imported from the qwen3 fixture and 100 arithmetic chats tokenized for it, packed."""
    if model not in registry.model_names():
        registry.import_model(model, os.path.join(FIXTURES, "qwen3"))
    path = home / f"{name}.jsonl"
    home.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for a, b in QUESTIONS:
            chat = [{"role": "user", "content": f"What is {a}+{b}?"}, {"role": "assistant", "content": str(a + b)}]
            f.write(json.dumps({"messages": chat}) + "\n")
    return aios.dataset(
        name, f"jsonl:{path}", tokenizer=model, format="chat", block=block, pack=True, split="train=0.9,val=0.1"
    )


def one_line(fn, match, kind=AiosError):
    with pytest.raises(kind, match=match) as err:
        fn()
    assert "\n" not in str(err.value)


def lm_config(model=None, **flags):
    return TrainConfig.for_job(
        dataset="chats", model=model or models.resolve("qwen"), task="lm", log_every=1, log_interval_s=0, **flags
    )


def masked_loss(logits, y, learned):
    logp = logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)
    nll = -np.take_along_axis(np.asarray(logp, np.float64), y[..., None], -1)[..., 0]
    return float((nll * learned).sum() / learned.sum())


def test_full_finetuning_starts_from_the_init_from_weights_and_learns_assistant_tokens_only(aios_home):
    ds = chats(aios_home, block=128)  # two or three documents a row
    twin = registry.import_model("qwen-twin", os.path.join(FIXTURES, "qwen3"))  # --init-from: same architecture
    spec = models.prepare(models.resolve("qwen"), ds, init_from="qwen-twin")
    cfg = lm_config(spec, steps=2, batch=8, n_devices=4, shard="fsdp", lr=1e-3, eval_every=2, checkpoint_every=2)
    rows, info = [], {}
    summary = train(cfg, on_metrics=rows.append, checkpoint_dir=aios_home / "ckpt", on_start=info.update)
    assert summary["step"] == 2 and ds.schema["documents"]["train"] > 1.5 * ds.splits["train"]
    assert info["state_bytes_per_device"] < info["state_bytes"] / 3  # fsdp: each device holds a share

    # the first step's loss, recomputed independently: every packed document run alone from position 0,
    # the loss counted on the assistant's tokens only, with the weights as imported
    base = registry.load_lm("qwen-twin", dtype="float32", stacked=True, device="host")
    raw = ds.load("train")
    x, y = Loader(view(ds), "train", 8, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])).host_batch(0)
    tokens, segments, mask = x[:, 0], x[:, 1], y >= 0
    docs, targets, learned = [], [], []
    for r in range(len(x)):
        for s in range(1, segments[r].max() + 1):
            sel = segments[r] == s
            row = np.zeros((2, x.shape[-1]), np.int64)
            n = int(sel.sum())
            row[0, :n], row[1, :n] = tokens[r][sel], np.where(mask[r][sel], y[r][sel], 0)
            docs.append(row[0])
            targets.append(row[1])
            learned.append(np.arange(x.shape[-1]) < n)
            learned[-1][:n] &= mask[r][sel]
    docs, targets, learned = np.array(docs, np.int32), np.array(targets), np.array(learned)
    alone = np.asarray(lm.logits(base.params, cfg=base.config, tokens=docs))
    expected = masked_loss(alone, targets, learned)
    first = next(r for r in rows if mn.SPLIT not in r and r[mn.STEP] == 1)
    assert first[mn.LOSS] == pytest.approx(expected, rel=1e-4)
    # what the test tells apart: attention across the packed documents, or a loss over every token
    packed = np.asarray(lm.logits(base.params, cfg=base.config, tokens=tokens))
    ys = np.where(mask, y, 0)
    assert abs(masked_loss(packed, ys, mask) - expected) > 1e-3 * expected
    everything = segments > 0
    assert abs(masked_loss(packed, ys, everything) - expected) > 1e-2 * expected
    assert len(raw[0]) == ds.splits["train"]

    val = [r for r in rows if r.get(mn.SPLIT) == "val"][-1]
    assert set(mn.eval_metrics("lm")) <= set(val) and val[mn.PERPLEXITY] == pytest.approx(np.exp(val[mn.LOSS]))
    with Checkpoints(aios_home / "ckpt", read_only=True) as ckpts:
        assert ckpts.reference_at(2)["base"] == {
            "model": "qwen-twin",
            "version": 1,
            "manifest_sha256": twin.manifest_sha256,
        }


def test_lora_trains_only_adapters_over_a_frozen_int8_base_in_bf16_with_remat(aios_home):
    chats(aios_home)
    spec = "r=4,alpha=8,targets=all,base=int8"
    cfg = lm_config(
        steps=8, batch=8, n_devices=2, shard="fsdp", precision="bf16", remat=True, lr=2e-2, lora=spec, warmup=0
    )
    rows, info = [], {}
    train(cfg, on_metrics=rows.append, checkpoint_dir=aios_home / "ckpt", on_start=info.update)
    losses = [r[mn.LOSS] for r in rows if mn.SPLIT not in r]
    assert losses[-1] < losses[0]
    with Checkpoints(aios_home / "ckpt", read_only=True) as ckpts:
        state = ckpts.restore_numpy(8)
        reference = ckpts.reference_at(8)
    adapters = state["params"]
    assert set(adapters) == {"layers"} and set(adapters["layers"]) == {"q", "k", "v", "o", "gate", "up", "down"}
    assert all(set(ab) == {"lora_a", "lora_b"} for ab in adapters["layers"].values())
    adapter_shapes = {a.shape for a in jax.tree.leaves(adapters)}
    moments = [a for a in jax.tree.leaves(state["opt_state"]) if a.ndim]
    assert moments and {a.shape for a in moments} <= adapter_shapes  # no optimizer state for the base
    assert reference == {
        "base": {"model": "qwen", "version": 1, "manifest_sha256": registry.get("qwen", 1).manifest_sha256},
        "lora": {"r": 4, "alpha": 8.0, "targets": "all", "base": "int8"},
    }
    full = sum(int(np.prod(s.shape)) * 4 for s in jax.tree.leaves(lm.param_shapes(registry.load("qwen").config)))
    assert info["state_bytes"] < full / 4  # adapters and their moments, not the model
    assert info["frozen_bytes"] < full / 2.5  # int8 kernels (fp32 would be `full`)


def test_bad_input_is_one_line_and_writes_nothing(ip, aios_home):
    chats(aios_home)
    registry.import_model("gpt2", os.path.join(FIXTURES, "gpt2"))  # qwen3's tokenizer, another architecture
    registry.import_model("llama", os.path.join(FIXTURES, "llama"))  # another tokenizer
    before = catalog().query("SELECT COUNT(*) FROM jobs")[0][0], sorted(p.name for p in aios_home.iterdir())
    one_line(
        lambda: ip.run_line_magic("aios", "train t --model gpt2 --dataset chats --lora r=4,targets=gate"),
        "targets=gate matches no layer of this gpt2 model",
        UsageError,
    )
    one_line(lambda: aios.train("t", dataset="chats", model="llama"), "tokenized for another tokenizer", InvalidInput)
    one_line(lambda: aios.train("t", dataset="chats", model="qwen", init_from="gpt2"), "same architecture")
    one_line(lambda: aios.train("t", dataset="chats", model="qwen", lora="targets=heads"), "use attn, mlp, all")
    one_line(lambda: aios.train("t", dataset="chats", model="mlp", lora="r=4"), "--lora fine-tunes a language model")
    assert (catalog().query("SELECT COUNT(*) FROM jobs")[0][0], sorted(p.name for p in aios_home.iterdir())) == before
    assert not (aios_home / "jobs" / "t").exists()


def same_params(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(la, lb))


def wait_for(cond, timeout=300.0, what="condition"):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_lora_job_killed_with_9_resumes_bitwise_then_publishes_compresses_and_generates(aios_home):
    chats(aios_home)
    # 300 steps: the job's step is published with its metric rows (about every half second), so a kill aimed
    # at step <= 60 can land 100 steps later on a fast machine; it must still land mid-run
    flags = dict(dataset="chats", model="qwen", devices=2, steps=300, batch=8, lr=3e-3, checkpoint_every=20)
    flags.update(eval_every=150, lora="r=4,alpha=8,targets=attn|up")
    ref = aios.train("ref", **flags)
    victim = aios.train("victim", **flags)
    kill_at = random.Random().randint(15, 60)
    wait_for(lambda: victim.step >= kill_at or victim.state != "running", what=f"step {kill_at}")
    pid = victim.pid
    assert pid and victim.step < 300, "the job is still running when killed"
    os.kill(pid, signal.SIGKILL)
    assert victim.wait(timeout=400) == "succeeded", victim.log_tail()
    assert ref.wait(timeout=400) == "succeeded", ref.log_tail()
    assert catalog().one("SELECT attempts FROM jobs WHERE name='victim'")["attempts"] == 1
    assert "resuming from the checkpoint" in victim.log_tail(200)
    assert same_params(victim.params(), ref.params()), f"killed at step {kill_at}"
    assert set(victim.params()["layers"]) == {"q", "k", "v", "o", "up"}

    # generate from the job (adapters merged on the fly), from a merged version and from an adapters version
    chat = [{"role": "user", "content": "What is 3+4?"}]
    from_job = victim.generate(chat, max_tokens=6)
    merged = aios.publish("victim", as_="tuned")
    kept = registry.publish("victim", as_="tuned-adapters", adapters=True)
    assert kept.nbytes < merged.nbytes / 2  # the adapters alone
    for mv in (merged, kept):
        assert registry.load(mv.name).generate(chat, max_tokens=6).tokens == from_job.tokens
        assert mv.lineage["base_model"] == "qwen" and mv.lineage["base_version"] == 1
        assert mv.lineage["job"] == "victim" and mv.lineage["dataset_version"] == 1
    assert from_job.tokens != registry.load("qwen").generate(chat, max_tokens=6).tokens  # it did learn something
    too_long = list(range(1, 200))  # the fixture's context is 128 tokens
    one_line(lambda: victim.generate(too_long, max_tokens=4), "context")

    rep = aios.compress("victim", "int8", batch=8)  # batch: the forward timed is small
    assert rep.ratio > 2 and set(rep.metrics_before) == set(rep.metrics_after) == set(mn.eval_metrics("lm"))
    assert rep.metrics_after[mn.PERPLEXITY] == pytest.approx(np.exp(rep.metrics_after[mn.LOSS]))
    assert (
        abs(rep.metrics_after[mn.PERPLEXITY] - rep.metrics_before[mn.PERPLEXITY])
        < 0.05 * rep.metrics_before[mn.PERPLEXITY]
    )
    rep4 = aios.compress("victim", "int4", batch=8)
    assert rep4.bytes_after < rep.bytes_after and np.isfinite(rep4.metrics_after[mn.PERPLEXITY])
    small = aios.publish("victim", variant="int8", as_="tuned")
    assert small.nbytes < merged.nbytes / 2 and small.lineage["base_model"] == "qwen"
    assert registry.load("tuned", small.version).generate(chat, max_tokens=6).completion_tokens > 0
