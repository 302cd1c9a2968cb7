"""optax optimisers (adamw|adam|sgd) with warm-up + cosine schedule, weight decay and gradient clipping."""

from __future__ import annotations

import jax
import optax

from .config import OPTIMIZERS


def schedule(lr: float, steps: int, warmup: int = 0) -> optax.Schedule:
    """Linear warm-up from 0 to ``lr`` over ``warmup`` steps, then cosine decay to lr/100 at ``steps``."""
    warmup = max(0, min(int(warmup), max(int(steps) - 1, 0)))
    return optax.warmup_cosine_decay_schedule(
        0.0 if warmup else lr, lr, warmup, max(int(steps), warmup + 1), end_value=lr / 100
    )


def decay_mask(params):
    """Weight-decay only matrices and kernels (ndim >= 2), not biases, norms or scalars."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(
    name: str = "adamw",
    lr: float = 1e-3,
    steps: int = 1000,
    warmup: int = 0,
    weight_decay: float = 0.0,
    clip: float = 0.0,
) -> optax.GradientTransformation:
    """The optimiser ``name`` on the schedule, with decoupled weight decay and global-norm clipping."""
    sched = schedule(lr, steps, warmup)
    if name == "adamw":
        opt = optax.adamw(sched, weight_decay=weight_decay, mask=decay_mask)
    elif name == "adam":
        opt = optax.adam(sched)
        if weight_decay:
            opt = optax.chain(optax.add_decayed_weights(weight_decay, decay_mask), opt)
    elif name == "sgd":
        parts = [optax.add_decayed_weights(weight_decay, decay_mask)] if weight_decay else []
        opt = optax.chain(*parts, optax.sgd(sched, momentum=0.9))
    else:
        raise ValueError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")
    return optax.chain(optax.clip_by_global_norm(clip), opt) if clip and clip > 0 else opt
