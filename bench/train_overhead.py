"""Benchmark: the aios trainer vs a hand-written jax.jit data-parallel loop on 8 forced CPU devices.

Same model (64-256-256-10 MLP), data (sklearn digits), batch (128) and optimiser; prints steps/s of
each after compilation and their ratio (target >= 0.95), then per-device bytes of params + optimizer
state under dp and fsdp (fsdp should be about 1/8). Run: ``python bench/train_overhead.py``.
"""
from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from aios_lab.train import mesh as meshlib  # noqa: E402
from aios_lab.train.arrays import ArrayDataset, ArrayLoader  # noqa: E402
from aios_lab.train.builtins import MLP  # noqa: E402
from aios_lab.train.trainer import TrainConfig, program, train  # noqa: E402

BATCH, LR, WARM = 128, 1e-3, 50


def digits() -> ArrayDataset:
    d = load_digits()
    return ArrayDataset({"train": ((d.data / 16).astype(np.float32), d.target.astype(np.int32))})


def aios_steps_per_s(ds: ArrayDataset, steps: int) -> float:
    """Steps/s of trainer.train between its first logged row after warm-up and its last."""
    cfg = TrainConfig(model="mlp", n_devices=8, steps=steps, batch=BATCH, lr=LR, optimizer="adamw",
                      checkpoint_every=10 * steps, eval_every=10 * steps, log_every=WARM, log_interval_s=0.0,
                      clip=0.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, rows.append, None, tmp, dataset=ds)
    first, last = rows[0], rows[-1]
    return (last["step"] - first["step"]) / (last["time"] - first["time"])


def hand_steps_per_s(ds: ArrayDataset, steps: int) -> float:
    """A minimal careful loop: jit with shardings and donation, device_put per batch, k-16 blocking."""
    mesh = meshlib.make_mesh(jax.devices())
    rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    model = MLP(10)
    tx = optax.adamw(optax.warmup_cosine_decay_schedule(LR, LR, 0, steps, LR / 100), weight_decay=0.0)
    params = jax.jit(model.init, out_shardings=rep)(jax.random.key(0), np.zeros((1, 64), np.float32))
    opt_state = jax.jit(tx.init, out_shardings=rep)(params)

    @jax.jit
    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()

    def step(p, s, x, y):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    step = jax.jit(step, donate_argnums=(0, 1), in_shardings=(rep, rep, data, data), out_shardings=(rep, rep, rep))
    batches = ArrayLoader(ds, "train", BATCH)  # same host indexing as the trainer
    losses, t0 = [], None
    for k in range(steps):
        x, y = batches.host_batch(k)
        params, opt_state, loss = step(params, opt_state, jax.device_put(x, data), jax.device_put(y, data))
        losses.append(loss)
        if k >= 16:
            losses[k - 16].block_until_ready()
        if k + 1 == WARM:
            loss.block_until_ready()
            t0 = time.perf_counter()
    losses[-1].block_until_ready()
    return (steps - WARM) / (time.perf_counter() - t0)


def state_bytes(ds: ArrayDataset, shard: str) -> int:
    """Max per-device bytes of params + optimizer state for the trainer's state under ``shard``."""
    cfg = TrainConfig(model="mlp", n_devices=8, batch=BATCH, shard=shard)
    prog = program(cfg, "classification", 10, ds.load("train")[0][:2], meshlib.make_mesh(jax.devices()))
    state = prog.init(jax.random.key(0))
    per = meshlib.bytes_per_device({"params": state["params"], "opt_state": state["opt_state"]})
    return max(per.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ds = digits()
    aios, hand = [], []
    hand_steps_per_s(ds, 2 * WARM)  # compile both once before timing
    aios_steps_per_s(ds, 2 * WARM)
    for _ in range(args.rounds):  # interleaved rounds; the best of each resists other load on the machine
        hand.append(hand_steps_per_s(ds, args.steps))
        aios.append(aios_steps_per_s(ds, args.steps))
    dp, fsdp = state_bytes(ds, "dp"), state_bytes(ds, "fsdp")
    print(f"devices: {len(jax.devices())} x {jax.devices()[0].platform}, model mlp 64-256-256-10, batch {BATCH}, "
          f"{args.steps} steps x {args.rounds} rounds (first {WARM} steps untimed)")
    print(f"hand-written jit loop : {max(hand):8.1f} steps/s   (rounds: {', '.join(f'{v:.0f}' for v in hand)})")
    print(f"aios trainer          : {max(aios):8.1f} steps/s   (rounds: {', '.join(f'{v:.0f}' for v in aios)})")
    print(f"ratio aios/hand       : {max(aios) / max(hand):8.3f}   (target >= 0.95)")
    print(f"per-device params+opt bytes  dp: {dp:,}  fsdp: {fsdp:,}  ratio fsdp/dp: {fsdp / dp:.3f} (target ~0.125)")


if __name__ == "__main__":
    main()
