"""Benchmark: aios on a local two-node Ray cluster (the loopback-only harness the tests use, token auth on).

Prints, in one run:

- submit -> first step: seconds from ``aios.train(..., on="ray")`` being called to the gang's first
  training step (the submit checks with their look at the cluster, the detached supervisor, the placement
  group, two rank processes, JAX's start, compile). The first step's time is the first train row's time less
  the steps after it at the job's own steady rate. The first gang of the run also pays the check that every
  host reaches the checkpoint folder and the dataset (later ones reuse it for ``reach.TRUST_S``).
- gang / local steps/s: one job as a gang of 2 hosts x 4 devices vs the same job as 2 local processes x 4
  devices (``--processes 2``), in interleaved rounds (the order alternates); each job's steady rate comes
  from its own metric rows (first train row to last: start-up and compile excluded, evals and checkpoints
  included); the median of the paired ratios is printed (target >= 0.9: Ray adds no per-step cost).
  Both "hosts" share this machine's cores, so the harness starts both nodes in one scheduler session
  (autogroup), as the two local processes are in one (their supervisor's): with a session per node the
  gang ran at 0.80 (CFS shares the cores between groups, and the ranks' collectives wake each other
  thousands of times a step), an artefact of two hosts on one machine, not a cost of Ray.
- req/s of 2 Ray Serve replicas / 1 local ``aios serve`` at 32 connections (``_cluster_serve.serve_section``).

Run: ``python bench/cluster.py [--steps N --rounds R --parts train,serve]`` (as root: the cluster lives in a
network namespace).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("--steps", type=int, default=300)
ARGS.add_argument("--rounds", type=int, default=3)
ARGS.add_argument("--batch", type=int, default=128)
ARGS.add_argument("--parts", default="train,serve", help="which parts to run: train, serve or both")
OPTS = ARGS.parse_args()

HOME = tempfile.mkdtemp(prefix="aios-bench-")
os.environ["AIOS_HOME"] = HOME
flags = os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count", "--xla_ignored")
os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=8".strip()
os.environ["JAX_PLATFORMS"] = "cpu"

import _aios_path  # noqa: E402

_aios_path.setup()
sys.path.insert(0, str(_aios_path.ROOT / "tests"))

from ray_cluster import RayCluster  # noqa: E402

import aios_lab as aios  # noqa: E402
from aios_lab.cluster import target  # noqa: E402
from aios_lab.cluster.ray_support import require_ray  # noqa: E402

JOB = dict(model="mlp", batch=OPTS.batch, lr=3e-3)


def steady(job) -> tuple[float, float]:
    """(steps/s from the job's first train row to its last, time of its first step)."""
    rows = [r for r in job.metrics() if r.get("split") is None]
    first, last = rows[0], rows[-1]
    rate = (last["step"] - first["step"]) / (last["time"] - first["time"])
    return rate, first["time"] - (first["step"] - 1) / rate


def run(name: str, **where) -> tuple[float, float]:
    """Train one job to its end; returns (steady steps/s, seconds from submit to its first step)."""
    t0 = time.time()
    job = aios.train(name, dataset="digits", steps=OPTS.steps, **JOB, **where)
    state = job.wait(timeout=1800)
    if state != "succeeded":
        raise SystemExit(f"{name} {state}: {job.error}\n{job.log_tail(40)}")
    rate, first_step = steady(job)
    return rate, first_step - t0


def serve_replicas(cluster: RayCluster) -> dict:
    """req/s of 2 Ray Serve replicas / 1 local ``aios serve`` at 32 connections (the serving part's section)."""
    from _cluster_serve import serve_section

    with tempfile.TemporaryDirectory(prefix="aios-bench-wrk-") as workdir:
        return serve_section(cluster, Path(workdir))


def training(cluster: RayCluster) -> None:
    """Submit -> first step, and gang / local steps/s in interleaved rounds."""
    aios.dataset("digits", "sklearn:digits")
    gang_rates, local_rates, ratios, to_first, local_first = [], [], [], [], []
    for r in range(OPTS.rounds):
        order = ("gang", "local") if r % 2 else ("local", "gang")
        got = {}
        for kind in order:
            if kind == "gang":
                got[kind] = run(f"gang-{r}", on="ray", hosts=2, devices_per_host=4)
            else:
                got[kind] = run(f"local-{r}", devices=8, processes=2)
        (g, g_first), (loc, l_first) = got["gang"], got["local"]
        gang_rates.append(g)
        local_rates.append(loc)
        ratios.append(g / loc)
        to_first.append(g_first)
        local_first.append(l_first)
        print(
            f"round {r + 1}: gang {g:.1f} steps/s, local {loc:.1f} steps/s, ratio {g / loc:.3f}; "
            f"submit -> first step: gang {g_first:.1f} s, local {l_first:.1f} s",
            flush=True,
        )
    print(f"\n{OPTS.steps} steps of mlp (batch {OPTS.batch}), 2 hosts x 4 CPU devices, {OPTS.rounds} rounds")
    print(f"submit -> first step (gang): first {to_first[0]:.1f} s, median {statistics.median(to_first):.1f} s")
    print(f"submit -> first step (2 local processes): median {statistics.median(local_first):.1f} s")
    print(
        f"steps/s gang {statistics.median(gang_rates):.1f} / local {statistics.median(local_rates):.1f}: "
        f"median paired ratio {statistics.median(ratios):.3f} (target >= 0.9)"
    )


def main() -> None:
    parts = set(OPTS.parts.split(","))
    with RayCluster(hosts=2, cpus=2, devices=4) as cluster, cluster.inside():
        t = target.Target(cluster.address, "token", require_ray(), time.time())
        target.save(t, cluster.token_path.read_text(), {"nodes": []})
        if "train" in parts:
            training(cluster)
        if "serve" in parts:
            print()
            serve_replicas(cluster)


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(HOME, ignore_errors=True)
