"""Data loader throughput over 8 host devices: streaming zarr vs cached vs plain numpy + device_put.

    .venv/bin/python bench/data_loader.py [--quick] [--platform cpu|gpu]

Prints examples/s delivered as sharded global device batches by
  (a) the Loader streaming a zarr dataset larger than its memory budget,
  (b) the Loader on a dataset cached in memory,
  (c) plain numpy slicing of in-memory arrays + jax.device_put (shuffled rows, the same work a
      training loop needs; contiguous, unshuffled slices are printed too),
and a hand-written jitted MLP step's consumption on the same 8 devices, then the ratios
(targets: b/c >= 0.9, a >= 5x the MLP's consumption) and the streaming run's peak RSS against its
budget. With --platform gpu the same runs target the machine's GPUs instead of 8 host devices.
(a) runs in its own fresh process so that its peak RSS is its own; (b) and (c) run
interleaved in one process, best of three rounds each, so that a busy machine hurts both alike.
"""

from __future__ import annotations

import os
import re

_flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", os.environ.get("XLA_FLAGS", ""))
os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # main() sets it for the phases from --platform

import argparse  # noqa: E402  (jax is imported only after XLA_FLAGS is set)
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

FEATURES = 64
BATCH = 1024
STREAM_ROWS, STREAM_BUDGET = 1_200_000, 96 << 20  # ~312 MB of rows against a 96 MiB budget
CACHED_ROWS = 150_000  # ~39 MB: cached


def devices_line() -> str:
    if os.environ["JAX_PLATFORMS"] == "cpu":
        return "8 host devices"
    out = subprocess.run(
        [sys.executable, "-c", "import jax; d = jax.devices(); print(len(d), d[0].device_kind)"],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    return out.stdout.strip() + " device(s)"


def rss_mib() -> float:
    """Current resident set size in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make(rows: int, name: str) -> dict:
    """Declare a random classification dataset of ``rows`` x 64 float32 features; returns the seconds the
    declaration took and how many of them sealing took (fsync and permissions of every file)."""
    import numpy as np

    import aios_lab as aios
    from aios_lab import atomic

    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, FEATURES), dtype=np.float32)
    y = rng.integers(0, 10, rows).astype(np.int32)
    seal, sealed = atomic.seal, []

    def timed_seal(*a, **k):
        t = time.perf_counter()
        seal(*a, **k)
        sealed.append(time.perf_counter() - t)

    atomic.seal = timed_seal
    try:
        t = time.perf_counter()
        aios.dataset(name, {"x": x, "y": y}, split="train=1.0")
        return {"declare_s": time.perf_counter() - t, "seal_s": sum(sealed)}
    finally:
        atomic.seal = seal


def make_both() -> dict:
    big, small = make(STREAM_ROWS, "big"), make(CACHED_ROWS, "small")
    return {k: big[k] + small[k] for k in big}


def timed_loader(it, steps: int) -> float:
    """Examples/s pulling ``steps`` batches from a running Loader iterator."""
    t = time.perf_counter()
    for _ in range(steps):
        _, x, y = next(it)
        x.block_until_ready(), y.block_until_ready()
    return steps * BATCH / (time.perf_counter() - t)


def timed_numpy(x, y, perm, sh, steps: int, shuffled: bool) -> float:
    """Examples/s of plain numpy slicing + jax.device_put (the hand-written baseline)."""
    import jax

    n = len(x) // BATCH
    t = time.perf_counter()
    for s in range(steps):
        j = s % n
        if shuffled:
            idx = perm[j * BATCH : (j + 1) * BATCH]
            xb, yb = x[idx], y[idx]
        else:
            xb, yb = x[j * BATCH : (j + 1) * BATCH], y[j * BATCH : (j + 1) * BATCH]
        gx, gy = jax.device_put(xb, sh), jax.device_put(yb, sh)
        gx.block_until_ready(), gy.block_until_ready()
    return steps * BATCH / (time.perf_counter() - t)


def run_stream(steps: int) -> dict:
    """(a): the Loader streaming ``big`` under STREAM_BUDGET, with RSS before and at peak."""
    import jax

    from aios_lab.data import get
    from aios_lab.data.loader import Loader, default_sharding

    ds = get("big")
    sh = default_sharding()
    jax.device_put(jax.numpy.zeros((BATCH, FEATURES)), sh).block_until_ready()
    ds.arrays("train")[0][:1]  # zarr's codec and I/O machinery, loaded before the baseline RSS
    base = rss_mib()
    loader = Loader(ds, "train", BATCH, sh, seed=0, memory_budget=STREAM_BUDGET, prefetch=4)
    it = iter(loader)
    timed_loader(it, 5)  # warm-up: the first window
    ex_s = timed_loader(it, steps)
    loader.close()
    return {
        "ex_s": ex_s,
        "cached": loader.cached,
        "base_mib": base,
        "peak_mib": peak_mib(),
        "data_mib": loader.nbytes / 2**20,
        "budget_mib": loader.memory_budget / 2**20,
        "window": loader.window,
    }


def run_compare(steps: int, rounds: int = 3) -> dict:
    """(b) vs (c) on ``small``, interleaved over a few rounds (best of each): fair on a busy machine."""
    import numpy as np

    from aios_lab.data import get
    from aios_lab.data.loader import Loader, default_sharding

    ds = get("small")
    sh = default_sharding()
    x, y = ds.load("train")
    perm = np.random.default_rng(0).permutation(len(x))
    loader = Loader(ds, "train", BATCH, sh, seed=0, prefetch=4)
    it = iter(loader)
    timed_loader(it, 5), timed_numpy(x, y, perm, sh, 5, True)
    best = {"cached": 0.0, "shuffled": 0.0, "contiguous": 0.0}
    for _ in range(rounds):
        best["cached"] = max(best["cached"], timed_loader(it, steps))
        best["shuffled"] = max(best["shuffled"], timed_numpy(x, y, perm, sh, steps, True))
        best["contiguous"] = max(best["contiguous"], timed_numpy(x, y, perm, sh, steps, False))
    loader.close()
    return {**best, "is_cached": loader.cached}


def run_mlp(steps: int) -> dict:
    """Examples/s a hand-written data-parallel jitted 64-256-256-10 MLP step consumes at batch 128."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    from aios_lab.data.loader import default_sharding

    sh = default_sharding()
    rep = NamedSharding(sh.mesh, PartitionSpec())
    key = jax.random.PRNGKey(0)
    sizes = [FEATURES, 256, 256, 10]
    params = [
        (jax.random.normal(k, (a, b)) * a**-0.5, jnp.zeros(b))
        for k, a, b in zip(jax.random.split(key, 3), sizes, sizes[1:])
    ]
    params = jax.device_put(params, rep)

    def loss(p, x, y):
        for w, b in p[:-1]:
            x = jax.nn.relu(x @ w + b)
        logits = x @ p[-1][0] + p[-1][1]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    @jax.jit
    def step(p, x, y):
        value, g = jax.value_and_grad(loss)(p, x, y)
        return jax.tree.map(lambda a, b: a - 0.01 * b, p, g), value

    batch = 128
    x = jax.device_put(np.random.default_rng(0).standard_normal((batch, FEATURES), dtype=np.float32), sh)
    y = jax.device_put(np.zeros(batch, np.int32), sh)
    params, value = step(params, x, y)
    value.block_until_ready()
    t = time.perf_counter()
    window = []
    for _ in range(steps):
        params, value = step(params, x, y)
        window.append(value)
        if len(window) > 16:  # bounded in-flight window: more steps in flight deadlock CPU collectives
            window.pop(0).block_until_ready()
    value.block_until_ready()
    return {"ex_s": steps * batch / (time.perf_counter() - t)}


def child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=os.environ)
    if out.returncode != 0:
        sys.exit(f"bench step {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument(
        "--platform",
        default="cpu",
        choices=["cpu", "gpu"],
        help="cpu: 8 forced host devices (default); gpu: the machine's GPUs",
    )
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        result = {
            "make": make_both,
            "stream": lambda: run_stream(args.steps),
            "compare": lambda: run_compare(args.steps),
            "mlp": lambda: run_mlp(args.steps),
        }[args.phase]()
        print(json.dumps(result))
        return

    os.environ["JAX_PLATFORMS"] = "cuda" if args.platform == "gpu" else "cpu"  # inherited by every phase
    steps = 100 if args.quick else 600
    home = tempfile.mkdtemp(prefix="aios-bench-")
    os.environ["AIOS_HOME"] = home
    try:
        t = time.perf_counter()
        made = child(["--phase", "make"])
        print(
            f"datasets written in {time.perf_counter() - t:.1f} s: stream {STREAM_ROWS:,} rows x {FEATURES} "
            f"float32 (+int32 label), cached {CACHED_ROWS:,} rows; batch {BATCH}, {devices_line()}"
        )
        print(
            f"declaring them took {made['declare_s']:.2f} s, of which sealing (fsync + private modes) "
            f"{made['seal_s']:.2f} s = {made['seal_s'] / made['declare_s']:.1%}"
        )
        stream = child(["--phase", "stream", "--steps", str(steps)])
        compare = child(["--phase", "compare", "--steps", str(steps)])
        mlp = child(["--phase", "mlp", "--steps", str(300 if args.quick else 1000)])
    finally:
        shutil.rmtree(home, ignore_errors=True)

    b, c, c_contig = compare["cached"], compare["shuffled"], compare["contiguous"]
    rows = [
        ("(a) Loader, streaming zarr", stream["ex_s"]),
        ("(b) Loader, cached", b),
        ("(c) numpy shuffled slice + device_put", c),
        ("    numpy contiguous slice + device_put", c_contig),
        ("mlp train step consumes (batch 128)", mlp["ex_s"]),
    ]
    print(f"\n{'path':45s} {'examples/s':>12s}")
    for label, value in rows:
        print(f"{label:45s} {value:12,.0f}")
    print(f"\nb / c            = {b / c:.2f}   (target >= 0.9)")
    print(f"b / c contiguous = {b / c_contig:.2f}")
    print(f"a / c            = {stream['ex_s'] / c:.2f}")
    print(f"a / mlp consumes = {stream['ex_s'] / mlp['ex_s']:.1f}x  (target >= 5x)")
    grew = stream["peak_mib"] - stream["base_mib"]
    print(
        f"streaming: {stream['data_mib']:.0f} MiB of rows, budget {stream['budget_mib']:.0f} MiB "
        f"({stream['window']}-chunk windows), cached={stream['cached']}; peak RSS {stream['peak_mib']:.0f} MiB "
        f"= {stream['base_mib']:.0f} MiB of runtime (jax, zarr) before the loader + {grew:.0f} MiB "
        f"during it ({'under' if grew <= stream['budget_mib'] else 'OVER'} the budget)"
    )


if __name__ == "__main__":
    main()
