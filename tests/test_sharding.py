"""Mesh and sharding rules: dp replicates, fsdp shards each array on its largest divisible dimension."""

import jax
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from aios_lab.train import models, optim, sharding as shardlib, step as steplib


@pytest.mark.parametrize(
    "shape, spec",
    [
        ((64, 256), P(None, "data")),
        ((256, 64), P("data")),
        ((10,), P()),
        ((7, 3), P()),
        ((16,), P("data")),
        ((8, 8), P("data")),
        ((), P()),
        ((3, 24, 16), P(None, "data")),
    ],
)
def test_fsdp_rule(shape, spec):
    assert shardlib.fsdp_spec(shape, 8) == spec


def test_mesh_is_auto_over_given_devices():
    mesh = shardlib.make_mesh(jax.devices()[2:6])
    assert mesh.axis_names == ("data",) and mesh.axis_types == (AxisType.Auto,)
    assert list(mesh.devices.flat) == jax.devices()[2:6]


def _state(mode, n_dev=8):
    model = models.build(models.resolve("mlp"), "classification", 10, (64,))
    tx = optim.make_optimizer("adamw", 1e-3)
    mesh = shardlib.make_mesh(jax.devices()[:n_dev])
    spec = jax.ShapeDtypeStruct((1, 64), np.float32)
    shardings = steplib.state_shardings(tx, steplib.abstract_state(model, tx, spec), mesh, mode)
    state = steplib.init_state(model, tx, jax.random.key(0), spec, shardings)
    return model, tx, mesh, shardings, state


def test_fsdp_cuts_per_device_bytes_of_params_and_optimizer_state():
    *_, dp = _state("dp")
    *_, fsdp = _state("fsdp")
    for part in ("params", "opt_state"):
        full = shardlib.bytes_per_device(dp[part])
        sharded = shardlib.bytes_per_device(fsdp[part])
        assert len(sharded) == 8
        assert max(sharded.values()) < full[0] / 7  # 64-256-256-10: all but biases of 10 divide by 8
    # optimizer moments follow their parameters' shardings
    mu = optax.tree_utils.tree_get(fsdp["opt_state"], "mu")["params"]["Dense_1"]["kernel"]
    assert mu.sharding == fsdp["params"]["params"]["Dense_1"]["kernel"].sharding
    assert mu.sharding.spec == P("data")


def test_dp_and_fsdp_train_the_same():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 64)).astype(np.float32)
    y = rng.integers(0, 10, 64).astype(np.int32)
    out = {}
    for mode in ("dp", "fsdp"):
        model, tx, mesh, shardings, state = _state(mode)
        step_fn = steplib.make_train_step(model, tx, "classification", mesh, shardings)
        sums = steplib.zero_sums(mesh)
        for _ in range(5):
            state, sums = step_fn(state, sums, x, y)
        out[mode] = jax.tree.map(np.asarray, state["params"])
        assert (
            state["params"]["params"]["Dense_0"]["kernel"].sharding
            == shardings["params"]["params"]["Dense_0"]["kernel"]
        )
    for a, b in zip(jax.tree.leaves(out["dp"]), jax.tree.leaves(out["fsdp"])):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
