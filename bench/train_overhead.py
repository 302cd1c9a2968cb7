"""Benchmark: a training job with default flags, run the way users run it, vs the leanest correct jax.jit loop.

The job: ``aios.train(...)`` in a scratch AIOS_HOME, trained by its detached worker (64-256-256-10 MLP,
sklearn digits, batch 128, 8 forced host devices, every other flag at its default: adamw, global-norm
clip, warm-up, checkpoints and evals every tenth of the run). Its steady-state speed comes from its own
metric rows (first train row to last: compile and start-up excluded; the evals and checkpoints in between
included) and its CPU time from sampling the worker's /proc entry over the same span.

The lean loop: the same model, data order, optimiser (clip by global norm, adamw, the same schedule) and
devices, written by hand: jit with shardings, donated state, the next batch's transfer dispatched before
waiting, a bounded in-flight window of 16 steps, no per-step read-back, no checkpoints.

Both run in interleaved rounds (paired ratios resist other load on the machine); prints steps/s of each,
the median ratio job/lean in wall and CPU time (target >= 0.9, goal 0.97), and per-device bytes of
params + optimizer state under dp and fsdp. Run: ``python bench/train_overhead.py [--steps N --rounds R]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections import deque

ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("--steps", type=int, default=None, help="steps per run (default: TrainConfig's)")
ARGS.add_argument("--rounds", type=int, default=5)
ARGS.add_argument("--devices", type=int, default=8)
ARGS.add_argument("--home", default=None, help="AIOS_HOME to use (default: a scratch folder, removed after)")
OPTS = ARGS.parse_args()

HOME = OPTS.home or tempfile.mkdtemp(prefix="aios-bench-")
os.environ["AIOS_HOME"] = HOME
flags = os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count", "--xla_ignored")
os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={OPTS.devices}".strip()
os.environ["JAX_PLATFORMS"] = "cpu"

import _aios_path  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

_aios_path.setup()

import aios_lab as aios  # noqa: E402
from aios_lab.train import sharding as shardlib  # noqa: E402
from aios_lab.train.builtins import MLP  # noqa: E402
from aios_lab.train.trainer import TrainConfig, program  # noqa: E402

BATCH, WINDOW, SKIP = 128, 16, 20  # the lean loop's clock starts after SKIP steps (compile)
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def at(samples: list[tuple[float, float]], t: float) -> float:
    """The CPU seconds at time ``t``, interpolated between (time, cpu) samples."""
    times = [s[0] for s in samples]
    i = min(max(int(np.searchsorted(times, t)), 1), len(samples) - 1)
    (t0, c0), (t1, c1) = samples[i - 1], samples[i]
    return c0 + (c1 - c0) * (t - t0) / max(t1 - t0, 1e-9)


def job_round(name: str, steps: int | None) -> tuple[float, float, dict]:
    """(wall, CPU-time) steps/s of a default job between its first and last train rows, and its config."""
    flags = {"steps": steps} if steps else {}  # everything else at its default
    job = aios.train(name, dataset="digits", model="mlp", devices=OPTS.devices, batch=BATCH, **flags)
    pid = None
    while pid is None and not job.done:
        pid = job.pid
        time.sleep(0.01)
    samples = []
    while pid is not None and (cpu := cpu_seconds(pid)) is not None:
        samples.append((time.time(), cpu))
        time.sleep(0.02)
    state = job.wait(timeout=600)
    if state != "succeeded":
        raise SystemExit(f"job {name} {state}: {job.error}\n{job.log_tail(30)}")
    rows = [r for r in job.metrics() if "split" not in r]
    first, last = rows[0], rows[-1]
    n = last["step"] - first["step"]
    cpu = at(samples, last["time"]) - at(samples, first["time"])
    waits = [r["input_wait"] for r in rows[1:] if "input_wait" in r]
    info = {"config": job.config["train"], "input_wait": statistics.mean(waits) if waits else None}
    return n / (last["time"] - first["time"]), n / max(cpu, 1e-9), info


def lean_round(x_all: np.ndarray, y_all: np.ndarray, cfg: dict) -> tuple[float, float]:
    """(wall, CPU-time) steps/s of the leanest correct hand-written loop with the job's resolved settings."""
    steps, lr, warmup = cfg["steps"], cfg["lr"], cfg["warmup"]
    mesh = shardlib.make_mesh(jax.devices()[: OPTS.devices])
    rep, data = shardlib.replicated(mesh), shardlib.batch_sharding(mesh)
    model = MLP(10)
    sched = optax.warmup_cosine_decay_schedule(
        0.0 if warmup else lr, lr, warmup, max(steps, warmup + 1), end_value=lr / 100
    )
    adamw = optax.adamw(sched, weight_decay=cfg["weight_decay"], mask=lambda p: jax.tree.map(lambda a: a.ndim >= 2, p))
    tx = optax.chain(optax.clip_by_global_norm(cfg["clip"]), adamw) if cfg["clip"] else adamw
    params = jax.jit(model.init, out_shardings=rep)(jax.random.key(cfg["seed"]), x_all[:1])
    opt_state = jax.jit(tx.init, out_shardings=rep)(params)

    def step(p, s, x, y):
        def loss_fn(p):
            return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()

        loss, g = jax.value_and_grad(loss_fn)(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    step = jax.jit(step, donate_argnums=(0, 1), in_shardings=(rep, rep, data, data), out_shardings=(rep, rep, rep))
    per_epoch, epochs = len(x_all) // BATCH, {}

    def put(k: int):  # the loader's order: epoch e is a permutation seeded by (seed, e), cut into batches
        e, j = divmod(k, per_epoch)
        if e not in epochs:
            order = np.random.default_rng([cfg["seed"], e]).permutation(len(x_all))
            epochs.clear()
            epochs[e] = (x_all[order], y_all[order])
        xe, ye = epochs[e]
        return jax.device_put((xe[j * BATCH : (j + 1) * BATCH], ye[j * BATCH : (j + 1) * BATCH]), (data, data))

    in_flight: deque = deque()
    nxt = put(0)
    for k in range(steps):
        params, opt_state, loss = step(params, opt_state, *nxt)
        nxt = put(k + 1)
        in_flight.append(loss)
        if len(in_flight) > WINDOW:
            in_flight.popleft().block_until_ready()
        if k + 1 == SKIP:
            loss.block_until_ready()
            t0, c0 = time.time(), time.process_time()
    jax.block_until_ready((params, loss))
    return (steps - SKIP) / (time.time() - t0), (steps - SKIP) / (time.process_time() - c0)


def state_bytes(shard: str) -> int:
    """Max per-device bytes of params + optimizer state for the trainer's state under ``shard``."""
    cfg = TrainConfig(model="mlp", n_devices=OPTS.devices, batch=BATCH, shard=shard)
    sample = np.zeros((2, 64), np.float32)
    prog = program(cfg, "classification", 10, sample, shardlib.make_mesh(jax.devices()[: OPTS.devices]))
    state = prog.init(jax.random.key(0))
    return max(shardlib.bytes_per_device({"params": state["params"], "opt_state": state["opt_state"]}).values())


def main() -> None:
    ds = aios.dataset("digits", "sklearn:digits", seed=0)
    x_all, y_all = ds.load("train")
    _, _, info = job_round("warm-up", OPTS.steps)  # both untimed once: caches, imports, the job's settings
    cfg = info["config"]
    lean_round(x_all, y_all, cfg)
    lean, job, waits = [], [], []
    for i in range(OPTS.rounds):
        lean.append(lean_round(x_all, y_all, cfg))
        wall, cpu, info = job_round(f"round-{i}", OPTS.steps)
        job.append((wall, cpu))
        waits.append(info["input_wait"])
    med = statistics.median
    print(
        f"devices: {OPTS.devices} x {jax.devices()[0].platform}, mlp 64-256-256-10 on sklearn digits, batch {BATCH}, "
        f"{cfg['steps']} steps (job defaults: {cfg['optimizer']}, clip {cfg['clip']}, warmup {cfg['warmup']}, "
        f"weight decay {cfg['weight_decay']}, checkpoint/eval every {cfg['checkpoint_every']}/{cfg['eval_every']} "
        f"with >= {cfg.get('checkpoint_min_s', 0):g} s between checkpoints), "
        f"{OPTS.rounds} interleaved rounds, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    for i, clock in enumerate(("wall", "cpu")):
        lv, jv = [r[i] for r in lean], [r[i] for r in job]
        ratios = [j / b for j, b in zip(jv, lv)]
        print(
            f"[{clock:4}] lean jit loop: median {med(lv):7.1f} steps/s (best {max(lv):7.1f});  "
            f"aios job: median {med(jv):7.1f} (best {max(jv):7.1f})"
        )
        print(
            f"[{clock:4}] ratio job/lean: median of paired rounds {med(ratios):.3f}  "
            f"(target >= 0.9, goal 0.97; rounds {', '.join(f'{r:.2f}' for r in ratios)})"
        )
    print("       (cpu = steps per CPU-second of the process: robust when other work shares the cores)")
    if all(w is not None for w in waits):
        print(f"job input wait (fraction of step time waiting for the next batch): median {med(waits):.3f}")
    dp, fsdp = state_bytes("dp"), state_bytes("fsdp")
    print(f"per-device params+opt bytes  dp: {dp:,}  fsdp: {fsdp:,}  ratio fsdp/dp: {fsdp / dp:.3f} (target ~0.125)")


if __name__ == "__main__":
    try:
        main()
    finally:
        if not OPTS.home:
            shutil.rmtree(HOME, ignore_errors=True)
