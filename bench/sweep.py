"""Benchmark: what early stopping saves a sweep. 16 trials of the mlp on digits over lr and width, 1 device each
on 8 host devices, once with every trial run to the end and once with ``early_stop="asha"``.

Both sweeps run the way users run them (``aios.sweep`` in a scratch AIOS_HOME: a detached driver, each trial an
ordinary job on the queue) and sample with the same seeded random sampler, so they try the same settings and
the only difference is pruning. Prints, for each, the device-steps used (steps run by the trials times the
devices each held) and the best validation loss, then the ratios ASHA/full. Targets: device-steps <= 0.40,
best validation loss within 2% (ratio <= 1.02). Device-steps are counts, not timings, so a busy machine slows
the run but barely moves the result (only which trials reach a rung first).

One pair of 16 trials is a small sample (whether ASHA keeps the eventual winner turns on a trial or two), so
``--seeds N`` runs N pairs with different sampler seeds and reports the median ratios.

Run: ``python bench/sweep.py [--steps 270 --eval-every 30 --trials 16 --seeds 3]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("--trials", type=int, default=16)
ARGS.add_argument("--steps", type=int, default=270, help="steps of a trial run to the end")
ARGS.add_argument("--eval-every", type=int, default=30, help="steps between evaluations: ASHA's first rung")
ARGS.add_argument("--over", default="lr=1e-4..3e-1:log, width=16|32|64|128|256")
ARGS.add_argument("--devices", type=int, default=8)
ARGS.add_argument("--seeds", type=int, default=3, help="pairs of sweeps to run, with sampler seeds 0, 1, ...")
ARGS.add_argument("--home", default=None, help="AIOS_HOME to use (default: a scratch folder, removed after)")
OPTS = ARGS.parse_args()

HOME = OPTS.home or tempfile.mkdtemp(prefix="aios-bench-")
os.environ["AIOS_HOME"] = HOME
flags = os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count", "--xla_ignored")
os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={OPTS.devices}".strip()
os.environ["JAX_PLATFORMS"] = "cpu"

import _aios_path  # noqa: E402

_aios_path.setup()

import aios_lab as aios  # noqa: E402


def run(name: str, early_stop: str | None, seed: int) -> dict:
    t0 = time.monotonic()
    sw = aios.sweep(
        name,
        "digits",
        model="mlp",
        over=OPTS.over,
        trials=OPTS.trials,
        metric="val.loss",
        goal="min",
        early_stop=early_stop,
        devices_per_trial=1,
        sampler="random",
        seed=seed,
        steps=OPTS.steps,
        eval_every=OPTS.eval_every,
        checkpoint_every=OPTS.steps,
        batch=64,
    )
    state = sw.wait()
    if state != "succeeded":
        raise SystemExit(f"sweep {name} ended {state}: {sw.to_json(curves=False)['error']}\n{sw.table()}")
    trials = sw.trials()
    best = sw.best()
    out = {
        "name": name,
        "device_steps": sw.device_steps(),
        "best": best.value,
        "best_params": best.params,
        "pruned": sum(t.state == "pruned" for t in trials),
        "wall_s": time.monotonic() - t0,
    }
    print(
        f"{name:>5}: {out['device_steps']:6d} device-steps, best val.loss {out['best']:.4f} "
        f"({best.job} {best.params}), {out['pruned']}/{len(trials)} pruned, {out['wall_s']:.0f} s",
        flush=True,
    )
    return out


def main() -> None:
    try:
        aios.dataset("digits", "sklearn:digits", split="train=0.8,val=0.2", seed=0)
        print(
            f"{OPTS.trials} trials x {OPTS.steps} steps (evals every {OPTS.eval_every}), over {OPTS.over!r}, "
            f"1 device each on {OPTS.devices} host devices",
            flush=True,
        )
        steps_ratios, loss_ratios = [], []
        for seed in range(OPTS.seeds):
            full = run(f"full-s{seed}", None, seed)
            asha = run(f"asha-s{seed}", "asha", seed)
            steps_ratios.append(asha["device_steps"] / full["device_steps"])
            loss_ratios.append(asha["best"] / full["best"])
            print(f"seed {seed}: ASHA/full device-steps {steps_ratios[-1]:.3f}, best val.loss {loss_ratios[-1]:.4f}")
        steps_ratio, loss_ratio = statistics.median(steps_ratios), statistics.median(loss_ratios)
        verdict = {True: "met", False: "MISSED"}
        over = f"median of {OPTS.seeds} seeds" if OPTS.seeds > 1 else "one seed"
        print(f"ASHA/full device-steps: {steps_ratio:.3f} ({over}; target <= 0.40, {verdict[steps_ratio <= 0.40]})")
        print(f"ASHA/full best val.loss: {loss_ratio:.4f} ({over}; target <= 1.02, {verdict[loss_ratio <= 1.02]})")
    finally:
        if not OPTS.home:
            shutil.rmtree(HOME, ignore_errors=True)


if __name__ == "__main__":
    main()
