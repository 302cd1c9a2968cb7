"""The jitted train and eval steps: pure functions of (state, batch), donated state, bf16 or fp32 compute.

State is a dict pytree ``{"step", "params", "opt_state"}``; parameters stay fp32 (master weights) and
``precision="bf16"`` casts them and float inputs to bf16 inside the step, outputs back to fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from . import sharding as shardlib
from .models import Model

# Train metrics come back as one small fp32 vector (one device->host read per step): these columns.
TRAIN_COLUMNS = ("loss", "accuracy")
# Eval steps return sums over the batch so batches add up exactly: these columns.
EVAL_COLUMNS = ("loss_sum", "correct", "count")


def cast_floats(tree: Any, dtype) -> Any:
    """Cast the floating leaves of ``tree`` to ``dtype``; integer leaves (tokens, labels) stay as they are."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def forward(model: Model, params: Any, x: jax.Array, precision: str = "fp32") -> jax.Array:
    """Model outputs in fp32; under bf16 the compute runs on bf16 copies of fp32 params."""
    if precision == "bf16":
        params, x = cast_floats(params, jnp.bfloat16), cast_floats(x, jnp.bfloat16)
    elif precision != "fp32":
        raise ValueError(f"unknown precision {precision!r}; use fp32 or bf16")
    return model.apply(params, x).astype(jnp.float32)


def per_example(task: str, out: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-example loss and correctness [B] for classification, regression or next-token lm."""
    if task == "classification":
        y = y.astype(jnp.int32).reshape(out.shape[0])
        loss = optax.softmax_cross_entropy_with_integer_labels(out, y)
        return loss, (jnp.argmax(out, -1) == y).astype(jnp.float32)
    if task == "lm":
        y = y.astype(jnp.int32)
        loss = optax.softmax_cross_entropy_with_integer_labels(out, y).mean(axis=-1)
        return loss, (jnp.argmax(out, -1) == y).astype(jnp.float32).mean(axis=-1)
    if task == "regression":
        y = y.astype(jnp.float32)
        err = jnp.square(out.reshape(y.shape) - y).reshape(y.shape[0], -1).mean(axis=-1)
        return err, jnp.zeros_like(err)
    raise ValueError(f"unknown task {task!r}")


def loss_fn(model: Model, task: str, precision: str) -> Callable:
    """``(params, x, y) -> (mean loss, [loss, accuracy])`` for differentiation with ``has_aux``.

    Both metrics come from one reduction over the sharded batch: one collective, not one per metric
    (on host devices each collective is a rendezvous of every device thread, so they dominate the step).
    """

    def fn(params, x, y):
        loss, correct = per_example(task, forward(model, params, x, precision), y)
        return loss.mean(), jnp.mean(jnp.stack([loss, correct], axis=-1), axis=0)

    return fn


def train_step_fn(model: Model, tx: optax.GradientTransformation, task: str, precision: str = "fp32") -> Callable:
    """The un-jitted step ``(state, x, y) -> (state, [loss, accuracy])``: grads, optax update, step + 1."""
    grad = jax.value_and_grad(loss_fn(model, task, precision), has_aux=True)

    def step(state, x, y):
        (_, metrics), grads = grad(state["params"], x, y)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = {"step": state["step"] + 1, "params": params, "opt_state": opt_state}
        return new, metrics.astype(jnp.float32)

    return step


def all_finite(tree: Any) -> jax.Array:
    """True when every float leaf of ``tree`` is finite (checked before a checkpoint is kept as good)."""
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree) if jnp.issubdtype(a.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def make_train_step(
    model: Model, tx: optax.GradientTransformation, task: str, mesh: Mesh, state_shardings: Any, precision: str = "fp32"
) -> Callable:
    """The jitted train step over ``mesh``: state donated and kept on its shardings, batch split on "data"."""
    data = shardlib.batch_sharding(mesh)
    return jax.jit(
        train_step_fn(model, tx, task, precision),
        donate_argnums=0,
        in_shardings=(state_shardings, data, data),
        out_shardings=(state_shardings, shardlib.replicated(mesh)),
    )


def make_eval_step(model: Model, task: str, mesh: Mesh, param_shardings: Any, precision: str = "fp32") -> Callable:
    """The jitted eval step ``(params, x, y, weight[B]) -> [loss_sum, correct, count]`` (padding has weight 0)."""
    data = shardlib.batch_sharding(mesh)

    def step(params, x, y, w):
        loss, correct = per_example(task, forward(model, params, x, precision), y)
        return jnp.stack([jnp.sum(loss * w), jnp.sum(correct * w), jnp.sum(w)]).astype(jnp.float32)

    return jax.jit(step, in_shardings=(param_shardings, data, data, data), out_shardings=shardlib.replicated(mesh))


def _state_init(model: Model, tx: optax.GradientTransformation, x: jax.ShapeDtypeStruct) -> Callable:
    """``rng -> {"step", "params", "opt_state"}`` for a sample batch spec ``x`` (traced, never run eagerly)."""

    def init(rng):
        params = model.init(rng, jnp.zeros(x.shape, x.dtype))
        return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}

    return init


def abstract_state(model: Model, tx: optax.GradientTransformation, x: jax.ShapeDtypeStruct) -> Any:
    """Shapes and dtypes of the train state for a sample batch spec ``x``, without allocating."""
    return jax.eval_shape(_state_init(model, tx, x), jax.random.key(0))


def state_shardings(tx: optax.GradientTransformation, abstract: Any, mesh: Mesh, mode: str = "dp") -> Any:
    """Shardings of the whole train state: params by ``mode``, optimizer state following its params."""
    ps = shardlib.param_shardings(abstract["params"], mesh, mode)
    return {
        "step": shardlib.replicated(mesh),
        "params": ps,
        "opt_state": shardlib.opt_state_shardings(tx, abstract["params"], ps, mesh),
    }


def make_init(model: Model, tx: optax.GradientTransformation, x: jax.ShapeDtypeStruct, shardings: Any) -> Callable:
    """A jitted ``rng -> state`` that creates the train state directly on its ``shardings``."""
    return jax.jit(_state_init(model, tx, x), out_shardings=shardings)


def init_state(
    model: Model, tx: optax.GradientTransformation, rng: jax.Array, x: jax.ShapeDtypeStruct, shardings: Any
) -> Any:
    """A fresh train state, created directly on its ``shardings`` (never gathered on one device)."""
    return make_init(model, tx, x, shardings)(rng)
