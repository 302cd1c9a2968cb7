"""Compression numerics against float64 references of the same quantisation; storage; the jitted forward."""

import functools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from aios_lab.compress import params_file
from aios_lab.compress.qmodel import QForward, device_bytes
from aios_lab.compress.quant import (
    QTensor,
    compress_params,
    compress_tensor,
    dequantize_params,
    leaf_paths,
    pack_int4,
    parse_method,
    unpack_int4,
)
from aios_lab.errors import AiosError

RNG = np.random.default_rng(0)
SHAPES = [(64, 32), (100, 24), (3, 3, 5, 16), (7, 9)]


def weights(shape, zero_channel=True):
    w = (RNG.standard_normal(shape) * RNG.uniform(0.01, 0.3, size=shape[-1])).astype(np.float32)
    if zero_channel:
        w[..., 1] = 0.0  # an all-zero output channel must not divide by zero
    return w


def deq(t: QTensor) -> np.ndarray:
    """The dense tensor as the jitted forward sees it."""
    return np.asarray(jax.jit(lambda t: t.dequantize())(t), np.float64)


# -- float64 references, written independently of the implementation ------------------------------
def ref_scale(amax, qmax, dtype):
    return np.where(amax > 0, amax / qmax, 1.0).astype(dtype).astype(np.float64)


def ref_int8(w, scale_dtype, keep=None):
    w2 = np.asarray(w, np.float64).reshape(-1, w.shape[-1])
    if keep is not None:
        w2 = w2 * keep.reshape(w2.shape)
    s = ref_scale(np.abs(w2).max(0), 127, scale_dtype)
    q = np.clip(np.rint(w2 / s), -127, 127)
    return q, (q * s).reshape(w.shape)


def ref_int4(w, group, scale_dtype, keep=None):
    w2 = np.asarray(w, np.float64).reshape(-1, w.shape[-1])
    if keep is not None:
        w2 = w2 * keep.reshape(w2.shape)
    r = w2.shape[0]
    s_rows = np.empty_like(w2)
    for g0 in range(0, r, group):
        s_rows[g0 : g0 + group] = ref_scale(np.abs(w2[g0 : g0 + group]).max(0), 7, scale_dtype)
    q = np.clip(np.rint(w2 / s_rows), -7, 7)
    return q, (q * s_rows).reshape(w.shape)


def ref_bf16(w):
    m, e = np.frexp(np.asarray(w, np.float64))
    return np.ldexp(np.rint(m * 256.0), e - 8)  # 8 significant bits, ties to even


def test_method_parsing_and_canonical_names():
    assert parse_method("int8").name == "int8"
    assert parse_method("INT4").group == 64
    assert parse_method("int4:128").name == "int4:128" and parse_method("int4:128").variant == "int4-128"
    m = parse_method("int8+prune:0.5")
    assert (m.quant, m.prune, m.name, m.variant) == ("int8", 0.5, "prune:0.5+int8", "prune-0.5-int8")
    for bad in [
        "int3",
        "fp8",
        "",
        "prune",
        "prune:0",
        "prune:1",
        "prune:1.5",
        "prune:-0.1",
        "prune:x",
        "int8+int4",
        "prune:0.5+prune:0.2",
        "int4:100",
    ]:
        with pytest.raises(AiosError) as e:
            parse_method(bad)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("shape", SHAPES)
def test_int8_matches_float64_reference(shape):
    w = weights(shape)
    t = compress_tensor(w, parse_method("int8"))
    assert t.data.dtype == np.int8 and t.data.shape == shape and t.scale.shape == (shape[-1],)
    q_ref, w_ref = ref_int8(w, t.scale.dtype)
    np.testing.assert_array_equal(t.data.reshape(q_ref.shape), q_ref)
    np.testing.assert_allclose(deq(t), w_ref, rtol=1e-6, atol=1e-9)
    # within half a step of the original, per channel
    step = np.abs(w.reshape(-1, shape[-1])).max(0) / 127
    assert np.all(np.abs(deq(t) - w).reshape(-1, shape[-1]) <= step * 0.5 + 1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("group", [64, 128])
def test_int4_grouped_matches_float64_reference(shape, group):
    w = weights(shape)
    t = compress_tensor(w, parse_method(f"int4:{group}"))
    n = int(np.prod(shape))
    rows = n // shape[-1]
    assert t.data.dtype == np.uint8 and t.data.size == (n + 1) // 2  # two values per byte
    assert t.scale.shape == (-(-rows // group), shape[-1])
    q_ref, w_ref = ref_int4(w, group, t.scale.dtype)
    np.testing.assert_array_equal(np.asarray(unpack_int4(t.data, np))[:n], q_ref.reshape(-1))
    np.testing.assert_allclose(deq(t), w_ref, rtol=1e-6, atol=1e-9)


def test_int4_packing_round_trips_every_value():
    q = np.tile(np.arange(-8, 8, dtype=np.int8), 3)[:-1]  # odd length
    packed = pack_int4(q)
    assert packed.size == (q.size + 1) // 2
    np.testing.assert_array_equal(np.asarray(unpack_int4(jnp.asarray(packed)))[: q.size], q)
    np.testing.assert_array_equal(unpack_int4(packed, np)[: q.size], q)


def test_bf16_matches_float64_reference():
    w = weights((64, 48), zero_channel=False)
    t = compress_tensor(w, parse_method("bf16"))
    assert t.data.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(deq(t), ref_bf16(w))


@pytest.mark.parametrize("method", ["prune:0.5", "prune:0.8+int8", "prune:0.3+int4", "prune:0.6+bf16"])
def test_pruning_keeps_the_largest_and_stores_only_them(method):
    w = weights((96, 40), zero_channel=False)
    m = parse_method(method)
    t = compress_tensor(w, m)
    d = deq(t)
    k = round(m.prune * w.size)
    keep = np.unpackbits(t.mask)[: w.size].astype(bool).reshape(w.shape)
    assert (~keep).sum() == k
    assert np.abs(w[~keep]).max() <= np.abs(w[keep]).min()  # magnitude pruning
    assert np.all(d[~keep] == 0)
    assert t.nbytes < w.nbytes * (1 - m.prune) + w.size / 8 + 4 * w.shape[-1] * 2 + 2  # the saving is real
    if m.quant is None:
        np.testing.assert_array_equal(d[keep], w[keep])
    elif m.quant == "int8":
        np.testing.assert_allclose(d, ref_int8(w, t.scale.dtype, keep)[1], rtol=1e-6, atol=1e-9)
    elif m.quant == "int4":
        np.testing.assert_allclose(d, ref_int4(w, 64, t.scale.dtype, keep)[1], rtol=1e-6, atol=1e-9)
    else:
        np.testing.assert_array_equal(d, np.where(keep, ref_bf16(w), 0))


def test_scales_fall_back_to_float32_outside_float16_range():
    w = weights((32, 8), zero_channel=False) * 1e-5  # scales below float16's normal range
    t = compress_tensor(w, parse_method("int8"))
    assert t.scale.dtype == np.float32
    np.testing.assert_allclose(deq(t), ref_int8(w, np.float32)[1], rtol=1e-6, atol=1e-12)
    assert compress_tensor(weights((32, 8)), parse_method("int8")).scale.dtype == np.float16


@functools.lru_cache(maxsize=4)
def _model(name):
    from aios_lab.train.models import build, resolve

    spec = resolve("cnn", channels=[8, 16], hidden=32) if name == "cnn" else resolve("mlp", width=64)
    model = build(spec, "classification", 10, (8, 8))
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((2, 8, 8), np.float32))
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.2).astype(s.dtype), shapes)
    return model, params, jax.jit(model.apply)


def cnn_params(name="cnn"):
    model, params, _ = _model(name)
    return model, jax.tree.map(np.array, params)


def test_tree_compression_keeps_biases_float_and_names_what_it_cannot_compress():
    model, params = cnn_params()
    params["params"]["Dense_1"]["kernel"] = params["params"]["Dense_1"]["kernel"].copy()
    params["params"]["Dense_1"]["kernel"][0, 0] = np.nan
    params["params"]["extra"] = {"table": np.arange(12, dtype=np.int32).reshape(3, 4)}
    q, info = compress_params(params, "int8")
    flat = dict(leaf_paths(q))
    assert isinstance(flat["params/Conv_0/kernel"], QTensor) and isinstance(flat["params/Dense_0/kernel"], QTensor)
    for path, leaf in flat.items():
        if path.endswith("bias"):
            assert isinstance(leaf, np.ndarray) and leaf.dtype == np.float32
    kept = {k["path"]: k["reason"] for k in info["kept_float"]}
    assert set(kept) == {"params/Dense_1/kernel", "params/extra/table"}
    assert "NaN" in kept["params/Dense_1/kernel"] and "int32" in kept["params/extra/table"]
    assert isinstance(flat["params/Dense_1/kernel"], np.ndarray)
    assert info["bytes_after"] < info["bytes_before"]


@pytest.mark.parametrize("name,method", [("mlp", "int8"), ("mlp", "bf16"), ("mlp", "prune:0.5+int8"), ("cnn", "int4")])
def test_jitted_forward_keeps_weights_compressed_and_matches_dequantised_apply(name, method):
    model, params = cnn_params(name)
    q, info = compress_params(params, method)
    fwd = QForward(model.apply, q)
    kinds = {str(a.dtype) for a in jax.tree.leaves(fwd.params)}
    assert "float32" in kinds  # biases
    assert kinds & {"int8", "uint8", "bfloat16"}
    assert fwd.nbytes == device_bytes(fwd.params) == info["bytes_after"]  # not expanded on the device
    x = RNG.standard_normal((5, 8, 8)).astype(np.float32)
    expected = np.asarray(_model(name)[2](dequantize_params(q, np), x))
    np.testing.assert_allclose(fwd(x), expected, rtol=1e-5, atol=1e-5)
    for n in (1, 3):  # any batch size (padded to a power of two inside)
        np.testing.assert_allclose(fwd(x[:n]), expected[:n], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["int8", "int4:128", "bf16", "prune:0.7", "prune:0.4+int4"])
def test_store_round_trip_and_safetensors_compatibility(tmp_path, method):
    _, params = cnn_params()
    q, _ = compress_params(params, method)
    path = tmp_path / "p.safetensors"
    params_file.save_tree(path, q)
    back = params_file.load_tree(path)
    la, lb = jax.tree.leaves(q), jax.tree.leaves(back)
    assert len(la) == len(lb) and all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(la, lb))
    assert jax.tree.structure(q) == jax.tree.structure(back)
    import safetensors

    names = {name for name, _ in safetensors.deserialize(path.read_bytes())}
    assert "params/Conv_0/bias" in names and any(n.endswith("::q") for n in names)
    raw = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(AiosError, match="not a valid safetensors"):
        params_file.load_tree(tmp_path / "cut.safetensors")


# -- stacked language-model layers: per-layer scales, groups and thresholds -----------------------------
def stacked(layers=3, fan_in=40, fan_out=24):
    """A stacked weight [L, in, out] whose layers differ in scale by orders of magnitude."""
    w = RNG.standard_normal((layers, fan_in, fan_out)).astype(np.float32)
    return w * (10.0 ** np.arange(layers, dtype=np.float32))[:, None, None] * 0.01


def test_stacked_int8_gives_each_layer_its_own_scales():
    w = stacked()
    t = compress_tensor(w, parse_method("int8"), stack=1)
    assert t.scale.shape == (3, 24) and t.data.shape == w.shape
    for i in range(3):  # each layer exactly as if it had been quantised alone
        alone = compress_tensor(w[i], parse_method("int8"))
        np.testing.assert_array_equal(t.data[i], alone.data)
        np.testing.assert_allclose(deq(t)[i], deq(alone), rtol=1e-6, atol=1e-9)
    shared = compress_tensor(w, parse_method("int8"))  # the old way: one scale across layers
    assert np.abs(deq(t)[0] - w[0]).max() < np.abs(deq(shared)[0] - w[0]).max() / 10


@pytest.mark.parametrize("group", [32, 64])
def test_stacked_int4_groups_stay_within_a_layer(group):
    w = stacked(layers=2, fan_in=40)  # 40 rows: groups would straddle layers if the stack were flattened
    t = compress_tensor(w, parse_method(f"int4:{group}"), stack=1)
    assert t.scale.shape == (2, -(-40 // group), 24)
    for i in range(2):
        alone = compress_tensor(w[i], parse_method(f"int4:{group}"))
        np.testing.assert_allclose(deq(t)[i], deq(alone), rtol=1e-6, atol=1e-9)


def test_stacked_pruning_thresholds_are_per_layer():
    w = stacked()
    t = compress_tensor(w, parse_method("prune:0.5+int8"), stack=1)
    d = deq(t)
    for i in range(3):  # half of every layer survives, even the small one
        assert (d[i] == 0).mean() == pytest.approx(0.5, abs=1 / w[i].size)
        alone = compress_tensor(w[i], parse_method("prune:0.5+int8"))
        np.testing.assert_allclose(d[i], deq(alone), rtol=1e-6, atol=1e-9)


def test_row_scales_for_embeddings_and_the_layout_in_a_tree(tmp_path):
    from aios_lab.train.lm_model import compress_layout

    emb = (RNG.standard_normal((50, 16)) * RNG.uniform(0.01, 2.0, size=(50, 1))).astype(np.float32)
    params = {
        "embed": emb,
        "layers": {
            "q": {"kernel": stacked(), "bias": np.ones((3, 24), np.float32)},
            "attn_norm": {"scale": np.ones((3, 40), np.float32)},
        },
        "final_norm": {"scale": np.ones(40, np.float32)},
    }
    q, info = compress_params(params, "int8", layout=compress_layout)
    flat = dict(leaf_paths(q))
    assert flat["embed"].scale.shape == (50,)  # one scale per row (token)
    np.testing.assert_allclose(
        deq(flat["embed"]), compress_tensor(emb.T, parse_method("int8")).dequantize(np).T, atol=1e-7
    )
    assert flat["layers/q/kernel"].scale.shape == (3, 24)
    for norm_or_bias in ("layers/q/bias", "layers/attn_norm/scale", "final_norm/scale"):
        assert isinstance(flat[norm_or_bias], np.ndarray)  # stacked [L, D] vectors stay float
    assert {t["path"] for t in info["tensors"]} == {"embed", "layers/q/kernel"}
    path = tmp_path / "lm.safetensors"
    params_file.save_tree(path, q)
    back = dict(leaf_paths(params_file.load_tree(path)))
    for name in ("embed", "layers/q/kernel"):
        assert (back[name].stack, back[name].axis) == (flat[name].stack, flat[name].axis)
        np.testing.assert_array_equal(deq(back[name]), deq(flat[name]))
