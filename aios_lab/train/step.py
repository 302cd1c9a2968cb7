"""The jitted train and eval steps: pure functions of (state, batch), donated state, bf16 or fp32 compute.

State is a dict pytree ``{"step", "params", "opt_state"}``; parameters stay fp32 (master weights) and
``precision="bf16"`` casts them and float inputs to bf16 inside the step, outputs back to fp32.

A model with a frozen part (LoRA: ``Model.frozen``) takes it as one more input of the step, after the
batch: it is neither donated nor differentiated, and has no optimizer state.

Losses are sums over what counts, divided once: a language model's labels may hold ``lm_data.IGNORE``
(not learned: prompts, padding), so its loss and accuracy are means over the learned tokens of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from .. import metric_names as mn
from . import sharding as shardlib
from .config import PRECISIONS
from .models import Model

# A train step adds its batch's mean loss and accuracy to running sums that stay on the devices (the
# loop reads them every few steps, not every step); "first_bad" is the first step whose loss was not finite.
NO_BAD_STEP = 2**31 - 1
# Eval steps return sums over the batch so batches add up exactly: these columns.
EVAL_COLUMNS = ("loss_sum", "correct", "count")


def cast_floats(tree: Any, dtype) -> Any:
    """Cast the floating leaves of ``tree`` to ``dtype``; integer leaves (tokens, labels) stay as they are."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def forward(model: Model, params: Any, x: jax.Array, precision: str = "fp32", frozen: Any = None) -> jax.Array:
    """Model outputs in fp32; under bf16 the compute runs on bf16 copies of fp32 params (and of the frozen
    part's float leaves; int8 stays int8)."""
    if precision == "bf16":
        params, x = cast_floats(params, jnp.bfloat16), cast_floats(x, jnp.bfloat16)
        frozen = None if frozen is None else cast_floats(frozen, jnp.bfloat16)
    elif precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    out = model.apply(params, x) if frozen is None else model.apply(params, x, frozen)
    return out.astype(jnp.float32)


def token_sums(task: str, out: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-example ``(loss sum, correct count, count)`` [B]: one per example for classification and
    regression; per learned token for a language model (labels below 0 are not learned)."""
    if task == "classification":
        y = y.astype(jnp.int32).reshape(out.shape[0])
        loss = optax.softmax_cross_entropy_with_integer_labels(out, y)
        return loss, (jnp.argmax(out, -1) == y).astype(jnp.float32), jnp.ones_like(loss)
    if task == "lm":
        y = y.astype(jnp.int32)
        learned = y >= 0
        loss = optax.softmax_cross_entropy_with_integer_labels(out, jnp.where(learned, y, 0))
        weight = learned.astype(jnp.float32)
        hit = (jnp.argmax(out, -1) == y).astype(jnp.float32) * weight
        return (loss * weight).sum(axis=-1), hit.sum(axis=-1), weight.sum(axis=-1)
    if task == "regression":
        y = y.astype(jnp.float32)
        err = jnp.square(out.reshape(y.shape) - y).reshape(y.shape[0], -1).mean(axis=-1)
        return err, jnp.zeros_like(err), jnp.ones_like(err)
    raise ValueError(f"unknown task {task!r}")


def per_example(task: str, out: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-example loss and correctness [B] for classification, regression or next-token lm (a row's mean
    over its learned tokens)."""
    loss, correct, count = token_sums(task, out, y)
    count = jnp.maximum(count, 1.0)
    return loss / count, correct / count


def loss_fn(model: Model, task: str, precision: str) -> Callable:
    """``(params, x, y, frozen=None) -> (mean loss, [loss, accuracy])`` for differentiation with ``has_aux``.

    The loss sum, the correct count and the count come from one reduction over the sharded batch: one
    collective, not one per metric (on host devices each collective is a rendezvous of every device
    thread, so they dominate the step).
    """

    def fn(params, x, y, frozen=None):
        loss, correct, count = token_sums(task, forward(model, params, x, precision, frozen), y)
        totals = jnp.sum(jnp.stack([loss, correct, count], axis=-1), axis=0)
        mean = totals[:2] / jnp.maximum(totals[2], 1.0)
        return mean[0], mean

    return fn


def train_step_fn(model: Model, tx: optax.GradientTransformation, task: str, precision: str = "fp32") -> Callable:
    """The un-jitted step ``(state, sums, x, y[, frozen]) -> (state, sums)``: grads, optax update, step + 1,
    and the batch's ``[loss, accuracy]`` added to ``sums`` (see ``zero_sums``)."""
    grad = jax.value_and_grad(loss_fn(model, task, precision), has_aux=True)

    def step(state, sums, x, y, frozen=None):
        (_, metrics), grads = grad(state["params"], x, y, frozen)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        done = state["step"] + 1
        metrics = metrics.astype(jnp.float32)
        bad = jnp.where(jnp.isfinite(metrics[0]), sums["first_bad"], jnp.minimum(sums["first_bad"], done))
        new = {"step": done, "params": params, "opt_state": opt_state}
        return new, {"sum": sums["sum"] + metrics, "first_bad": bad}

    return step


def zero_sums(mesh: Mesh | None = None) -> dict:
    """Empty running sums for the train step, replicated over ``mesh``: ``{"sum": [loss, accuracy], "first_bad"}``."""
    sums = {"sum": np.zeros(2, np.float32), "first_bad": np.int32(NO_BAD_STEP)}
    return jax.device_put(sums, shardlib.replicated(mesh)) if mesh is not None else jax.device_put(sums)


def sums_clean(sums: dict) -> bool:
    """True when no loss in a segment of running sums (read back as numpy) was NaN or infinite."""
    return int(sums["first_bad"]) == NO_BAD_STEP and bool(np.all(np.isfinite(sums["sum"])))


def eval_summary(outs: list, task: str) -> dict:
    """The eval metrics of ``task`` from the eval steps' sums (loss, and accuracy, mse or perplexity)."""
    totals = np.sum(jax.device_get(outs), axis=0, dtype=np.float64)
    loss_sum, correct, count = (float(v) for v in totals)
    loss = loss_sum / max(count, 1)
    row = {mn.LOSS: loss}
    if task == "regression":
        row[mn.MSE] = loss
    else:
        row[mn.ACCURACY] = correct / max(count, 1)
    if task == "lm":
        row[mn.PERPLEXITY] = mn.perplexity(loss)
    return row


def eval_metrics(row: dict, task: str) -> dict:
    """The metrics of an eval row that rank checkpoints (finite numbers only)."""
    return {k: row[k] for k in mn.eval_metrics(task) if isinstance(row.get(k), float) and math.isfinite(row[k])}


def all_finite(tree: Any) -> jax.Array:
    """True when every float leaf of ``tree`` is finite (checked before a checkpoint is kept as good)."""
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree) if jnp.issubdtype(a.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def make_copy(shardings: Any) -> Callable:
    """A jitted copy of a tree on its ``shardings``: a snapshot that outlives the donation of the original."""
    return jax.jit(lambda tree: jax.tree.map(jnp.copy, tree), in_shardings=(shardings,), out_shardings=shardings)


def make_all_finite(mesh: Mesh, param_shardings: Any) -> Callable:
    """The jitted ``all_finite`` over params laid out by ``param_shardings`` (answer replicated)."""
    return jax.jit(all_finite, in_shardings=(param_shardings,), out_shardings=shardlib.replicated(mesh))


def make_train_step(
    model: Model,
    tx: optax.GradientTransformation,
    task: str,
    mesh: Mesh,
    state_shardings: Any,
    precision: str = "fp32",
    frozen_shardings: Any = None,
) -> Callable:
    """The jitted train step over ``mesh``: state donated and kept on its shardings, batch split on "data",
    sums replicated and not donated (the loop reads an older step's sums while newer steps run). With
    ``frozen_shardings`` it takes the frozen part as a fifth input, laid out so and never donated."""
    data, rep = shardlib.batch_sharding(mesh), shardlib.replicated(mesh)
    frozen = () if frozen_shardings is None else (frozen_shardings,)
    return jax.jit(
        train_step_fn(model, tx, task, precision),
        donate_argnums=0,
        in_shardings=(state_shardings, rep, data, data, *frozen),
        out_shardings=(state_shardings, rep),
    )


def make_eval_step(
    model: Model, task: str, mesh: Mesh, param_shardings: Any, precision: str = "fp32", frozen_shardings: Any = None
) -> Callable:
    """The jitted eval step ``(params, x, y, weight[B][, frozen]) -> [loss_sum, correct, count]`` (padding has
    weight 0; a language model counts its learned tokens)."""
    data = shardlib.batch_sharding(mesh)
    frozen = () if frozen_shardings is None else (frozen_shardings,)

    def step(params, x, y, w, frozen=None):
        loss, correct, count = token_sums(task, forward(model, params, x, precision, frozen), y)
        return jnp.stack([jnp.sum(loss * w), jnp.sum(correct * w), jnp.sum(count * w)]).astype(jnp.float32)

    return jax.jit(
        step, in_shardings=(param_shardings, data, data, data, *frozen), out_shardings=shardlib.replicated(mesh)
    )


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
    """A ``rng -> state`` that creates the train state directly on its ``shardings``: jitted from ``model.init``,
    or, for a model that starts from given weights (``model.pretrained``), those weights placed shard by shard
    with a fresh optimizer state built on the devices."""
    if model.pretrained is None:
        return jax.jit(_state_init(model, tx, x), out_shardings=shardings)
    start = jax.jit(
        lambda params: {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)},
        in_shardings=(shardings["params"],),
        out_shardings=shardings,
        donate_argnums=0,
    )

    def init(rng):
        return start(place(model.pretrained(), shardings["params"]))

    return init


def place(host: Any, shardings: Any) -> Any:
    """Numpy arrays onto their shardings, each device (of every process) getting only its own slice."""

    def put(a, s):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, s, lambda index: a[index])

    return jax.tree.map(put, host, shardings)


def init_state(
    model: Model, tx: optax.GradientTransformation, rng: jax.Array, x: jax.ShapeDtypeStruct, shardings: Any
) -> Any:
    """A fresh train state, created directly on its ``shardings`` (never gathered on one device)."""
    return make_init(model, tx, x, shardings)(rng)
