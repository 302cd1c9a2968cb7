"""Model specs: built-ins, module targets, %%aios model cells (content-hashed versions), output checks."""

import jax
import numpy as np
import pytest

from aios_lab.errors import AiosError
from aios_lab.train import models

FLAX_CELL = """
import flax.linen as nn

class Tiny(nn.Module):
    n_outputs: int
    width: int = 16

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.n_outputs)(nn.relu(nn.Dense(self.width)(x)))
"""

FUNCTIONS_CELL = """
import jax, jax.numpy as jnp

def init(rng, x, n_outputs):
    return {"w": jax.random.normal(rng, (x.shape[-1], n_outputs)) * 0.01, "b": jnp.zeros(n_outputs)}

def apply(params, x):
    return x @ params["w"] + params["b"]
"""


def _out(model, x):
    """Output shape without running anything (eval_shape keeps these tests fast)."""
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    return jax.eval_shape(model.apply, params, x).shape


@pytest.mark.parametrize(
    "name, shape, task, n, x, out",
    [
        ("mlp", (64,), "classification", 10, np.zeros((4, 64), np.float32), (4, 10)),
        ("cnn", (64,), "classification", 10, np.zeros((4, 64), np.float32), (4, 10)),
        ("cnn", (8, 8, 3), "classification", 5, np.zeros((4, 8, 8, 3), np.float32), (4, 5)),
        ("mlp", (3,), "regression", 1, np.zeros((4, 3), np.float32), (4, 1)),
        ("gpt", (16,), "lm", 256, np.zeros((4, 16), np.int32), (4, 16, 256)),
    ],
)
def test_builtins_fit_their_task(name, shape, task, n, x, out):
    spec = models.resolve(name, **({"d_model": 32, "n_layers": 1} if name == "gpt" else {}))
    assert spec["kind"] == "builtin"
    model = models.build(spec, task, n, shape)
    assert models.check(model, task, n, x) == out
    with pytest.raises(AiosError, match="does not fit"):
        models.check(model, task, n + 1 if task != "regression" else 3, x)


def test_builtin_size_flags_change_the_params():
    small = models.build(models.resolve("mlp", width=8, depth=1), "classification", 3, (4,))
    params = jax.eval_shape(small.init, jax.random.key(0), np.zeros((1, 4), np.float32))
    assert sum(p.size for p in jax.tree.leaves(params)) == 4 * 8 + 8 + 8 * 3 + 3


def test_cnn_refuses_flat_non_square_features():
    with pytest.raises(AiosError, match="image-shaped"):
        models.build(models.resolve("cnn"), "classification", 3, (10,))


def test_module_target_and_unknown_names():
    spec = models.resolve("aios_lab.train.builtins:MLP", width=8)
    assert spec == {"kind": "module", "target": "aios_lab.train.builtins:MLP", "config": {"width": 8}}
    assert _out(models.build(spec, "classification", 3, (5,)), np.zeros((2, 5), np.float32)) == (2, 3)
    with pytest.raises(AiosError, match="cannot import"):
        models.build(models.resolve("no_such_mod:thing"), "classification", 3, (5,))
    with pytest.raises(AiosError, match="unknown model"):
        models.resolve("never-defined")
    with pytest.raises(AiosError, match="invalid"):
        models.resolve("Bad Name")


def test_define_versions_by_content():
    assert models.define("tiny", FLAX_CELL) == ("tiny", 1)
    assert models.define("tiny", FLAX_CELL) == ("tiny", 1)  # same source: same version
    assert models.define("tiny", FLAX_CELL.replace("16", "32")) == ("tiny", 2)
    spec = models.resolve("tiny")
    assert spec["version"] == 2 and "32" in spec["source"]
    assert models.resolve("tiny@1")["version"] == 1
    model = models.build(spec, "classification", 4, (6,))
    assert _out(model, np.ones((3, 6), np.float32)) == (3, 4)
    assert [d["version"] for d in models.definitions()] == [1, 2]


def test_define_init_apply_functions():
    assert models.define("linear", FUNCTIONS_CELL, sample=np.zeros((2, 7), np.float32), n_outputs=3) == ("linear", 1)
    model = models.build(models.resolve("linear"), "classification", 3, (7,))
    assert _out(model, np.ones((5, 7), np.float32)) == (5, 3)


@pytest.mark.parametrize(
    "source, match",
    [
        ("import no_such_package_xyz", "failed to run"),
        ("def broken(:\n  pass", "failed to run"),
        ("x = 1", "must define"),
        (
            "import jax.numpy as jnp\ndef init(rng, x):\n    return {}\n"
            "def apply(p, x):\n    return jnp.zeros((x.shape[0], 2))",
            "does not fit",
        ),
        ("def init(rng, x):\n    raise ValueError('boom')\ndef apply(p, x):\n    return x", "does not initialise"),
    ],
)
def test_bad_cells_are_refused_and_not_stored(source, match):
    with pytest.raises(AiosError, match=match):
        models.define("bad", source)
    assert models.definitions() == []


def test_model_cell_magic(ip):
    out = ip.run_cell_magic("aios", "model tiny", FLAX_CELL)
    assert "tiny version 1" in str(out)
    assert models.resolve("tiny")["version"] == 1
