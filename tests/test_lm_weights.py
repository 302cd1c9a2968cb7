"""Configs from both RoPE spellings, checked and streamed weight import, bad checkpoints, the model contract."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

from aios_lab import lm
from aios_lab.errors import AiosError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "hf")


def raw_config(family):
    with open(os.path.join(FIXTURES, family, "config.json"), encoding="utf-8") as f:
        return json.load(f)


def copy_fixture(family, dest):
    shutil.copytree(os.path.join(FIXTURES, family), dest, dirs_exist_ok=True)
    return str(dest)


def one_line_error(fn, match):
    with pytest.raises(AiosError, match=match) as err:
        fn()
    assert "\n" not in str(err.value)
    return str(err.value)


def test_old_and_new_rope_spellings_give_one_config():
    new = raw_config("llama3")
    old = {k: v for k, v in new.items() if k != "rope_parameters"}
    params = new["rope_parameters"]
    old["rope_theta"] = params["rope_theta"]
    old["rope_scaling"] = {
        "rope_type": "llama3",
        **{k: v for k, v in params.items() if k not in ("rope_theta", "rope_type")},
    }
    cfg = lm.from_hf(new)
    assert cfg == lm.from_hf(old)
    assert cfg.rope == lm.Rope(
        theta=500000.0, kind="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_context=64
    )
    gemma = raw_config("gemma3")
    g_old = {k: v for k, v in gemma.items() if k not in ("rope_parameters", "layer_types")}
    g_old.update(
        rope_theta=50000.0,
        rope_local_base_freq=1000.0,
        sliding_window_pattern=6,
        rope_scaling={"rope_type": "linear", "factor": 2.0},
    )
    assert lm.from_hf(g_old) == lm.from_hf(gemma)
    assert lm.from_hf(gemma).sliding == (True,) * 5 + (False,)
    assert lm.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # JSON round trip for model specs
    one_line_error(
        lambda: lm.from_hf({**new, "rope_parameters": {"rope_type": "yarn", "factor": 4.0}}),
        "unsupported RoPE scaling 'yarn'",
    )


def test_unsupported_architecture_and_missing_config(tmp_path):
    msg = one_line_error(
        lambda: lm.from_hf({"architectures": ["BertForMaskedLM"], "hidden_size": 8}),
        "unsupported architecture BertForMaskedLM",
    )
    for arch in lm.ARCHITECTURES:
        assert arch in msg
    one_line_error(lambda: lm.read_config(str(tmp_path)), "has no config.json")
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    one_line_error(lambda: lm.read_config(str(tmp_path)), "incomplete or malformed")
    one_line_error(lambda: lm.load_pretrained(str(tmp_path)), "incomplete or malformed")


def test_missing_truncated_or_stale_shards_are_refused_before_reading(tmp_path):
    path = copy_fixture("qwen3", tmp_path / "q")
    os.remove(os.path.join(path, "model-00002-of-00002.safetensors"))
    one_line_error(lambda: lm.load_pretrained(path), "shard model-00002-of-00002.safetensors .* is missing")

    path = copy_fixture("qwen3", tmp_path / "t")
    shard = os.path.join(path, "model-00001-of-00002.safetensors")
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) - 100)
    one_line_error(lambda: lm.load_pretrained(path), "model-00001-of-00002.safetensors is truncated")

    path = copy_fixture("llama", tmp_path / "l")
    with open(os.path.join(path, "model.safetensors"), "r+b") as f:
        f.truncate(6)
    one_line_error(lambda: lm.load_pretrained(path), "model.safetensors is truncated")

    path = copy_fixture("qwen3", tmp_path / "s")  # the index assigns a tensor to a shard that lacks it
    index_file = os.path.join(path, "model.safetensors.index.json")
    with open(index_file, encoding="utf-8") as f:
        index = json.load(f)
    index["weight_map"]["lm_head.weight"] = "model-00001-of-00002.safetensors"
    with open(index_file, "w", encoding="utf-8") as f:
        json.dump(index, f)
    one_line_error(lambda: lm.load_pretrained(path), "says model-00001-of-00002.safetensors holds 'lm_head.weight'")

    path = copy_fixture("gpt2", tmp_path / "none")
    os.remove(os.path.join(path, "model.safetensors"))
    (tmp_path / "none" / "pytorch_model.bin").write_bytes(b"not read")
    one_line_error(lambda: lm.load_pretrained(path), "never loaded")

    path = copy_fixture("llama", tmp_path / "wrong")  # config from another model: shapes disagree
    cfg = raw_config("llama")
    cfg["intermediate_size"] = 96
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f)
    one_line_error(lambda: lm.load_pretrained(path), "config.json implies")


@pytest.mark.parametrize("family", ["qwen3", "gpt2", "gemma3"])
def test_weights_stream_one_stacked_tensor_at_a_time(family):
    path = os.path.join(FIXTURES, family)
    cfg = lm.read_config(path)
    shapes = {"/".join(k.key for k in p): s for p, s in jax.tree_util.tree_flatten_with_path(lm.param_shapes(cfg))[0]}
    it = lm.iter_params(path, cfg, dtype=None)  # keep the stored dtype
    assert iter(it) is it  # a generator: a registry writer pulls tensors one by one
    seen = {}
    for name, array in it:
        assert array.shape == shapes[name].shape
        seen[name] = array.dtype
    assert set(seen) == set(shapes)
    stored = np.float32 if family == "gpt2" else ml_dtypes.bfloat16
    assert set(seen.values()) == {np.dtype(stored)}
    params = lm.load_params(path, cfg)
    assert params["layers"]["q"]["kernel"].shape == (cfg.num_layers, cfg.hidden_size, cfg.num_heads * cfg.head_dim)
    assert params["layers"]["q"]["kernel"].dtype == np.float32
    card = lm.card(cfg, params)
    assert card.parameters == sum(a.size for a in jax.tree.leaves(params)) and card.bytes == 4 * card.parameters
    assert f"{cfg.num_layers} layers" in str(card) and f"vocab {cfg.vocab_size}" in str(card)
    if family == "qwen3":  # the sharded index counts the same parameters
        with open(os.path.join(path, "model.safetensors.index.json"), encoding="utf-8") as f:
            assert json.load(f)["metadata"]["total_parameters"] == card.parameters


def test_model_fits_the_model_contract_and_differentiates():
    """``init(rng, x)`` / ``apply(params, x) -> [B, T, V]``, differentiable (traced only: compiling a
    gradient costs seconds; the sharded train step itself is exercised by train/'s tests)."""
    cfg = lm.read_config(os.path.join(FIXTURES, "qwen3"))
    model = lm.LanguageModel(cfg)
    x = jax.ShapeDtypeStruct((8, 16), np.int32)
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), params) == jax.tree.map(
        lambda s: (s.shape, s.dtype), lm.param_shapes(cfg)
    )
    assert jax.eval_shape(model.apply, params, x).shape == (8, 16, cfg.vocab_size)

    def loss(p, x):
        logits = model.apply(p, x[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, x[:, 1:]).mean()

    grads = jax.eval_shape(jax.grad(loss), params, x)
    assert jax.tree.map(lambda a: a.shape, grads) == jax.tree.map(lambda a: a.shape, params)
    # bf16 compute (as train/'s --precision bf16 casts params) keeps fp32 logits
    bf16 = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.bfloat16), params)
    assert jax.eval_shape(model.apply, bf16, x).dtype == jnp.float32
