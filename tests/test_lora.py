"""LoRA adapters as pure functions: targets per architecture, the unmerged forward equals the merged weights,
an int8 base dequantised inside the forward, and --lora parsing."""

import os

import jax
import numpy as np
import pytest

from aios_lab import lm
from aios_lab.compress.quant import quantize_int8
from aios_lab.errors import InvalidInput
from aios_lab.train import lora
from aios_lab.train.config import TrainConfig, parse_lora

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "hf")


def config(family):
    return lm.read_config(os.path.join(FIXTURES, family))


def random_params(cfg, seed=0):
    """Base weights drawn with numpy (eager jax.random would compile once per shape)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.2).astype(np.float32), lm.param_shapes(cfg))


def forward(params, cfg, tokens):
    return lm.logits(params, cfg=cfg, tokens=tokens)  # jitted: one compile per tree layout


def one_line(fn, match):
    with pytest.raises(InvalidInput, match=match) as err:
        fn()
    assert "\n" not in str(err.value)


def test_targets_follow_the_architecture_and_a_target_matching_no_layer_is_refused():
    qwen, gpt2 = config("qwen3"), config("gpt2")
    spec = parse_lora("targets=attn")
    assert lora.targets(qwen, spec) == ("q", "k", "v", "o")
    assert lora.targets(qwen, parse_lora("targets=mlp")) == ("gate", "up", "down")
    assert lora.targets(gpt2, parse_lora("targets=all")) == ("q", "k", "v", "o", "up", "down")  # no gate
    assert lora.targets(qwen, parse_lora("targets=v|q|v")) == ("v", "q")
    one_line(lambda: lora.targets(gpt2, parse_lora("targets=gate")), "targets=gate matches no layer of this gpt2")
    one_line(lambda: parse_lora("targets=attention"), "use attn, mlp, all or projections")
    one_line(lambda: parse_lora("r=0"), "--lora r must be a whole number")
    one_line(lambda: parse_lora("rank=4"), "has no key 'rank'")
    one_line(lambda: TrainConfig.for_job(lora="base=int4"), "base='int4'")
    assert TrainConfig.for_job(lora="r=8,alpha=16").lora == {"r": 8, "alpha": 16.0, "targets": "attn", "base": "float"}


def test_the_unmerged_forward_equals_the_merged_weights():
    cfg = config("qwen3")
    spec = parse_lora("r=4,alpha=8,targets=all")
    base = random_params(cfg)
    adapters = jax.device_get(jax.jit(lambda key: lora.init(cfg, spec, key))(jax.random.key(1)))
    shapes = jax.tree.map(lambda s: s.shape, lora.shapes(cfg, spec))
    assert jax.tree.map(np.shape, adapters) == shapes
    assert all(np.all(ab["lora_b"] == 0) for ab in adapters["layers"].values())  # training starts at the base
    rng = np.random.default_rng(0)
    adapters = jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(np.float32) * 0.1, adapters)
    tokens = rng.integers(0, cfg.vocab_size, (2, 12)).astype(np.int32)
    unmerged = forward(lora.attach(base, adapters, spec), cfg, tokens)
    merged_params = lora.merge(base, adapters, spec)
    merged = forward(merged_params, cfg, tokens)
    np.testing.assert_allclose(np.asarray(unmerged), np.asarray(merged), rtol=1e-4, atol=1e-4)
    assert not np.allclose(np.asarray(merged), np.asarray(forward(base, cfg, tokens)), atol=1e-3)
    for name in lora.targets(cfg, spec):  # W + alpha/r A B, layer by layer
        a, b = adapters["layers"][name]["lora_a"][1], adapters["layers"][name]["lora_b"][1]
        want = base["layers"][name]["kernel"][1] + 2.0 * a @ b
        np.testing.assert_allclose(merged_params["layers"][name]["kernel"][1], want, rtol=1e-5, atol=1e-6)
    lora.check_adapters(cfg, spec, adapters)
    one_line(lambda: lora.check_adapters(cfg, parse_lora("r=8,targets=all"), adapters), "do not fit")


def test_an_int8_base_is_dequantised_per_layer_inside_the_forward():
    cfg = config("llama")
    spec = parse_lora("targets=attn,base=int8")
    base = random_params(cfg)
    frozen = lora.frozen(base, spec, np.float32)
    abstract = lora.frozen_shapes(cfg, spec, np.float32)
    assert jax.tree.map(lambda a: (a.shape, np.dtype(a.dtype)), frozen) == jax.tree.map(
        lambda s: (s.shape, np.dtype(s.dtype)), abstract
    )
    q = frozen["layers"]["up"]
    assert q["kernel"].dtype == np.int8 and q["kernel_scale"].shape == (cfg.num_layers, cfg.intermediate_size)
    assert frozen["embed"].dtype == np.float32 and frozen["lm_head"]["kernel"].dtype == np.int8
    dense = jax.tree.map(np.copy, base)  # what the int8 base stands for, quantised per layer and channel
    for name in ("q", "k", "v", "o", "gate", "up", "down"):
        dense["layers"][name]["kernel"] = quantize_int8(base["layers"][name]["kernel"], stack=1).dequantize(np)
    dense["lm_head"]["kernel"] = quantize_int8(base["lm_head"]["kernel"]).dequantize(np)
    tokens = np.arange(10, dtype=np.int32)[None] * 7
    np.testing.assert_allclose(
        np.asarray(forward(frozen, cfg, tokens)), np.asarray(forward(dense, cfg, tokens)), rtol=2e-4, atol=2e-4
    )
