"""Model specs: built-ins, module targets, %%aios model cells (content-hashed versions), output checks."""

import jax
import numpy as np
import pytest

from aios_lab.errors import AiosError, InvalidInput
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
    ],
)
def test_bad_cells_are_refused_and_not_stored(source, match):
    with pytest.raises(InvalidInput, match=match):
        models.define("bad", source)
    assert models.definitions() == []


@pytest.mark.parametrize(
    "source, match",
    [
        (
            "import jax.numpy as jnp\ndef init(rng, x):\n    return {}\n"
            "def apply(p, x):\n    return jnp.zeros((x.shape[0], 2))",
            r"does not fit a classification task with 3 outputs on this dataset's samples of shape \(5,\)",
        ),
        (
            "def init(rng, x):\n    raise ValueError('boom')\ndef apply(p, x):\n    return x",
            r"does not initialise on this dataset's samples of shape \(5,\).*ValueError: boom",
        ),
    ],
)
def test_cells_checked_on_a_sample_must_fit_it(source, match):
    with pytest.raises(InvalidInput, match=match):
        models.define("bad", source, sample=np.zeros((2, 5), np.float32), n_outputs=3)
    assert models.definitions() == []


# Defect 2's models: valid, but neither fits the (2, 16) batch with 10 outputs that was once made up for them.
FOR_64_FEATURES = """
import jax

def init(rng, x, n_outputs):
    return {"w": jax.random.normal(rng, (64, n_outputs)) * 0.01}

def apply(params, x):
    return x.reshape(x.shape[0], 64) @ params["w"]
"""

THREE_OUTPUTS = """
import flax.linen as nn

class Three(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.relu(nn.Dense(16)(x)))
"""


def test_a_cell_is_stored_without_a_made_up_shape_and_checked_on_the_jobs_dataset():
    assert models.define("wide", FOR_64_FEATURES) == ("wide", 1)
    assert models.define("three", THREE_OUTPUTS) == ("three", 1)
    wide, three = models.resolve("wide"), models.resolve("three")
    digits_x, iris_x = np.zeros((2, 64), np.float32), np.zeros((2, 4), np.float32)
    assert models.check(models.build(wide, "classification", 10, (64,)), "classification", 10, digits_x) == (2, 10)
    assert models.check(models.build(three, "classification", 3, (4,)), "classification", 3, iris_x) == (2, 3)
    # used on a dataset they do not fit: the error names the dataset's shape and how to check early
    with pytest.raises(InvalidInput, match=r"samples of shape \(4,\).*%%aios model wide --dataset"):
        models.check(models.build(wide, "classification", 3, (4,)), "classification", 3, iris_x)
    with pytest.raises(InvalidInput, match=r"with 10 outputs .* shape \(64,\).*%%aios model three --dataset"):
        models.check(models.build(three, "classification", 10, (64,)), "classification", 10, digits_x)


def test_model_cell_magic(ip):
    import aios_lab as aios

    aios.dataset("digits", "sklearn:digits")
    aios.dataset("iris", "sklearn:iris")
    out = ip.run_cell_magic("aios", "model tiny", FLAX_CELL)
    assert "tiny version 1" in str(out) and "--dataset" in str(out)
    assert models.resolve("tiny")["version"] == 1
    assert "checked on digits" in str(ip.run_cell_magic("aios", "model wide --dataset digits", FOR_64_FEATURES))
    assert "checked on iris" in str(ip.run_cell_magic("aios", "model three --dataset iris@1", THREE_OUTPUTS))
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match=r"does not fit .* 10 outputs .*shape \(8, 8\)"):
        ip.run_cell_magic("aios", "model three --dataset digits", THREE_OUTPUTS.replace("16", "17"))
    assert [d["name"] for d in models.definitions()] == ["three", "tiny", "wide"]
