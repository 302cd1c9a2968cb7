"""GPU benchmark: model FLOPs utilisation of the built-in gpt in bf16, aios trainer vs a hand-written loop.

Both train the same decoder-only transformer (fp32 master weights, bf16 compute, AdamW with global-norm
clipping) on the same synthetic byte tokens; the aios side goes through ``trainer.train`` (mesh, sharding
rules, jitted step, in-flight window, orbax) with in-memory data, so no zarr or catalog is needed.
MFU = 6N+attention FLOPs per token x tokens/s / peak (790 TFLOP/s: a measured bf16 matmul on an H200).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import _aios_path

_aios_path.setup()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from aios_lab.train.arrays import ArrayDataset  # noqa: E402
from aios_lab.train.builtins import GPT, gpt_flops_per_token  # noqa: E402
from aios_lab.train.trainer import TrainConfig, train  # noqa: E402

VOCAB = 256


def tokens(n: int, block: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic byte-token sequences and their next-token targets."""
    seq = np.random.default_rng(seed).integers(0, VOCAB, (n, block + 1), dtype=np.int32)
    return seq[:, :-1], seq[:, 1:]


def aios_run(args, model_cfg: dict) -> float:
    """Steps/s of trainer.train (bf16) between its row at step ``warm`` and its last row."""
    n_dev = len(jax.devices())
    x, y = tokens(args.batch * n_dev * 4, args.block)
    ds = ArrayDataset({"train": (x, y)}, task="lm", n_classes=VOCAB)
    cfg = TrainConfig(
        model={"kind": "builtin", "name": "gpt", "config": model_cfg},
        n_devices=n_dev,
        steps=args.steps,
        batch=args.batch * n_dev,
        lr=3e-4,
        optimizer="adamw",
        precision="bf16",
        checkpoint_every=10 * args.steps,
        eval_every=10 * args.steps,
        log_every=5,
        log_interval_s=0.0,
        warmup=10,
        weight_decay=0.1,
        clip=1.0,
    )
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, rows.append, None, tmp, dataset=ds)
    first = next(r for r in rows if r["step"] >= args.warm)
    last = rows[-1]
    return (last["step"] - first["step"]) / (last["time"] - first["time"])


def hand_run(args, model_cfg: dict) -> float:
    """Steps/s of a minimal hand-written bf16 loop: jit, donation, device-resident batches, k-16 blocking."""
    n_dev = len(jax.devices())
    module = GPT(VOCAB, block_size=args.block, **model_cfg)
    x, y = tokens(args.batch * n_dev * 4, args.block)
    batches = [(jax.device_put(x[i::4]), jax.device_put(y[i::4])) for i in range(4)]
    params = jax.jit(module.init)(jax.random.key(0), batches[0][0][:1])
    sched = optax.warmup_cosine_decay_schedule(0.0, 3e-4, 10, args.steps, 3e-6)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=0.1))
    opt = jax.jit(tx.init)(params)

    def loss_fn(p, x, y):
        p = jax.tree.map(lambda a: a.astype(jnp.bfloat16), p)
        logits = module.apply(p, x).astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(p, o, x, y):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    losses, t0 = [], None
    for k in range(args.steps):
        params, opt, loss = step(params, opt, *batches[k % 4])
        losses.append(loss)
        if k >= 16:
            losses[k - 16].block_until_ready()
        if k + 1 == args.warm:
            loss.block_until_ready()
            t0 = time.perf_counter()
    losses[-1].block_until_ready()
    return (args.steps - args.warm) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=32, help="sequences per device per step")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warm", type=int, default=10, help="steps left out of the timing (compilation)")
    ap.add_argument("--peak", type=float, default=790e12, help="peak FLOP/s per device (bf16)")
    args = ap.parse_args()
    model_cfg = {"d_model": args.d_model, "n_layers": args.layers, "n_heads": args.heads}
    n_dev = len(jax.devices())
    flops_per_step = gpt_flops_per_token(model_cfg, VOCAB, args.block) * args.batch * n_dev * args.block
    print(
        f"jax {jax.__version__}, {n_dev} x {jax.devices()[0].device_kind}; gpt d_model={args.d_model} "
        f"layers={args.layers} heads={args.heads} block={args.block}, batch {args.batch}/device, bf16, "
        f"{flops_per_step / 1e12:.2f} TFLOP/step, peak {args.peak / 1e12:.0f} TFLOP/s/device",
        flush=True,
    )
    results = {}
    for name, fn in (("hand-written jit loop", hand_run), ("aios trainer", aios_run)):
        t = time.time()
        results[name] = fn(args, model_cfg)
        print(f"  {name}: done in {time.time() - t:.0f} s", flush=True)
    print(f"\n{'loop':24} {'steps/s':>8} {'tokens/s':>11} {'TFLOP/s':>8} {'MFU':>6}")
    for name, sps in results.items():
        tflops = sps * flops_per_step / 1e12
        print(
            f"{name:24} {sps:8.2f} {sps * args.batch * n_dev * args.block:11,.0f} {tflops:8.1f} "
            f"{tflops * 1e12 / (args.peak * n_dev):6.1%}"
        )
    hand, aios = results["hand-written jit loop"], results["aios trainer"]
    print(f"ratio aios/hand: {aios / hand:.3f}")


if __name__ == "__main__":
    main()
