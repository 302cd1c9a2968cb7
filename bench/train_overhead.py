"""Benchmark: the aios trainer vs a hand-written jax.jit data-parallel loop on 8 forced CPU devices.

Same model (64-256-256-10 MLP), data (sklearn digits), batch (128) and optimiser; prints steps/s of
each after compilation and their ratio (target >= 0.95), then per-device bytes of params + optimizer
state under dp and fsdp (fsdp should be about 1/8). Run: ``python bench/train_overhead.py``.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse
import statistics
import tempfile
import time

import _aios_path
import jax
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P
from sklearn.datasets import load_digits

_aios_path.setup()

from aios_lab.train import sharding as shardlib  # noqa: E402
from aios_lab.train.arrays import ArrayDataset, ArrayLoader  # noqa: E402
from aios_lab.train.builtins import MLP  # noqa: E402
from aios_lab.train.trainer import TrainConfig, program, train  # noqa: E402

BATCH, LR, WARM = 128, 1e-3, 50


def digits() -> ArrayDataset:
    d = load_digits()
    return ArrayDataset({"train": ((d.data / 16).astype(np.float32), d.target.astype(np.int32))})


def aios_steps_per_s(ds: ArrayDataset, steps: int) -> tuple[float, float]:
    """(wall, CPU-time) steps/s of trainer.train between its first logged row after warm-up and its last."""
    cfg = TrainConfig(
        model="mlp",
        n_devices=8,
        steps=steps,
        batch=BATCH,
        lr=LR,
        optimizer="adamw",
        checkpoint_every=10 * steps,
        eval_every=10 * steps,
        log_every=WARM,
        log_interval_s=0.0,
        clip=0.0,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, lambda r: rows.append({**r, "cpu": time.process_time()}), None, tmp, dataset=ds)
    first, last = rows[0], rows[-1]
    n = last["step"] - first["step"]
    return n / (last["time"] - first["time"]), n / (last["cpu"] - first["cpu"])


def hand_steps_per_s(ds: ArrayDataset, steps: int) -> tuple[float, float]:
    """A minimal careful loop: jit with shardings and donation, device_put per batch, k-16 blocking."""
    mesh = shardlib.make_mesh(jax.devices())
    rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    model = MLP(10)
    tx = optax.adamw(optax.warmup_cosine_decay_schedule(LR, LR, 0, steps, LR / 100), weight_decay=0.0)
    params = jax.jit(model.init, out_shardings=rep)(jax.random.key(0), np.zeros((1, 64), np.float32))
    opt_state = jax.jit(tx.init, out_shardings=rep)(params)

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
            t0, c0 = time.time(), time.process_time()
    losses[-1].block_until_ready()
    return (steps - WARM) / (time.time() - t0), (steps - WARM) / (time.process_time() - c0)


def state_bytes(ds: ArrayDataset, shard: str) -> int:
    """Max per-device bytes of params + optimizer state for the trainer's state under ``shard``."""
    cfg = TrainConfig(model="mlp", n_devices=8, batch=BATCH, shard=shard)
    prog = program(cfg, "classification", 10, ds.load("train")[0][:2], shardlib.make_mesh(jax.devices()))
    state = prog.init(jax.random.key(0))
    per = shardlib.bytes_per_device({"params": state["params"], "opt_state": state["opt_state"]})
    return max(per.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    ds = digits()
    aios, hand = [], []
    hand_steps_per_s(ds, args.steps)  # compile both (same schedule length as the timed runs) before timing
    aios_steps_per_s(ds, args.steps)
    for _ in range(args.rounds):  # short interleaved rounds: paired ratios resist other load on the machine
        hand.append(hand_steps_per_s(ds, args.steps))
        aios.append(aios_steps_per_s(ds, args.steps))
    dp, fsdp = state_bytes(ds, "dp"), state_bytes(ds, "fsdp")
    med = statistics.median
    print(
        f"devices: {len(jax.devices())} x {jax.devices()[0].platform}, model mlp 64-256-256-10, batch {BATCH}, "
        f"{args.steps} steps x {args.rounds} interleaved rounds (first {WARM} steps of each untimed), "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    for i, clock in enumerate(("wall", "cpu")):
        h, a = [r[i] for r in hand], [r[i] for r in aios]
        ratios = [x / y for x, y in zip(a, h)]
        print(
            f"[{clock:4}] hand-written jit loop: median {med(h):7.1f} steps/s (best {max(h):7.1f});  "
            f"aios trainer: median {med(a):7.1f} (best {max(a):7.1f})"
        )
        print(
            f"[{clock:4}] ratio aios/hand: median of paired rounds {med(ratios):.3f}, best/best "
            f"{max(a) / max(h):.3f}  (target >= 0.95; rounds {', '.join(f'{r:.2f}' for r in ratios)})"
        )
    print("        (cpu = steps per second of this process's CPU time: robust when other jobs share the cores)")
    print(f"per-device params+opt bytes  dp: {dp:,}  fsdp: {fsdp:,}  ratio fsdp/dp: {fsdp / dp:.3f} (target ~0.125)")


if __name__ == "__main__":
    main()
