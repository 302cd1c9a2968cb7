"""Compression on real jobs: size ratio, accuracy change and forward time per method, mlp and cnn on digits.

    .venv/bin/python bench/compress.py [--steps 300] [--keep-home]

Trains the built-in mlp and cnn briefly on sklearn:digits (as aios jobs in a scratch AIOS_HOME, split
train=0.6,val=0.1,test=0.3 so the test split has 539 rows), then compresses each with every method
through ``aios.compress`` and prints, per model and method: weight bytes ratio (the quantised tensors
with their scales against float32), total bytes ratio (biases included), test accuracy before/after and
the change in points, the largest logit change, and the variant's jitted forward time (batch 256, weights
dequantised inside the jit) relative to fp32, all measured in this one run.
Targets: int8 >= 3.9x smaller weights with <= 0.5 pt accuracy drop; int4 >= 7x with <= 2 pts.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse
import shutil
import tempfile
import time

METHODS = ["int8", "int4", "int4:128", "bf16", "prune:0.5", "prune:0.5+int8", "prune:0.5+int4"]
TARGETS = {"int8": (3.9, 0.5), "int4": (7.0, 2.0), "int4:128": (7.0, 2.0)}  # weight ratio >=, drop (pts) <=


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--keep-home", action="store_true", help="keep the scratch AIOS_HOME and print it")
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="aios-bench-compress-")
    os.environ["AIOS_HOME"] = home
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import aios_lab as aios
    from aios_lab.render import Table

    t0 = time.time()
    aios.dataset("digits", "sklearn:digits", split="train=0.6,val=0.1,test=0.3", seed=0)
    jobs = {}
    for name in args.models.split(","):
        jobs[name] = aios.train(
            f"digits-{name}",
            dataset="digits",
            model=name,
            devices=1,
            batch=64,
            steps=args.steps,
            lr=3e-3,
            checkpoint_every=args.steps,
            eval_every=args.steps,
        )
    for name, job in jobs.items():
        state = job.wait(timeout=1800)
        if state != "succeeded":
            print(job.log_tail(30), file=sys.stderr)
            raise SystemExit(f"training {name} ended {state}")
    print(f"trained {', '.join(jobs)} for {args.steps} steps in {time.time() - t0:.0f}s", flush=True)

    rows, failures = [], []
    for name, job in jobs.items():
        for method in METHODS:
            rep = aios.compress(job, method, eval="test")
            drop = -100 * rep.delta
            verdict = "-"
            if method in TARGETS:
                want_ratio, max_drop = TARGETS[method]
                ok = rep.weight_ratio >= want_ratio and drop <= max_drop
                verdict = "pass" if ok else "FAIL"
                if not ok:
                    failures.append(f"{name} {method}")
            rows.append(
                [
                    name,
                    method,
                    f"{rep.weight_ratio:.2f}x",
                    f"{rep.ratio:.2f}x",
                    f"{100 * rep.metric_before:.2f}",
                    f"{100 * rep.metric_after:.2f}",
                    f"{-drop:+.2f}",
                    f"{rep.max_abs_logit_diff:.3g}",
                    f"{1e3 * rep.forward_s_before:.3f}",
                    f"{1e3 * rep.forward_s_after:.3f}",
                    f"{rep.speed:.2f}x",
                    verdict,
                ]
            )
            print(f"  {name} {method}: done", flush=True)
    print()
    print(
        Table(
            [
                "model",
                "method",
                "weights",
                "total",
                "acc fp32 %",
                "acc %",
                "delta pts",
                "max |dlogit|",
                "fp32 ms",
                "variant ms",
                "time vs fp32",
                "target",
            ],
            rows,
            title=f"compression on sklearn:digits, {rep.eval.split(':')[-1]}, forward batch 256, "
            f"targets int8 >= 3.9x & <= 0.5 pt drop, int4 >= 7x & <= 2 pts",
        )
    )
    print(
        f"\ntotal {time.time() - t0:.0f}s; " + ("all targets met" if not failures else f"missed: {', '.join(failures)}")
    )
    if args.keep_home:
        print(f"AIOS_HOME kept at {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
