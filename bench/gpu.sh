#!/usr/bin/env bash
# On a lent GPU machine, from the repository root: `bash bench/gpu.sh [gpu_mfu.py flags]`.
# 1) MFU of the built-in gpt in bf16 through the aios trainer vs a hand-written jit loop (a few minutes).
# 2) Unless AIOS_BENCH_CPU=0: the CPU overhead benchmark on 8 forced host devices, on this idle machine.
# Needs only jax, optax, flax, orbax-checkpoint, numpy (and scikit-learn for step 2); no zarr, no IPython.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
echo "== gpt bf16 MFU: aios trainer vs hand-written loop =="
"$PY" bench/gpu_mfu.py "$@"
if [ "${AIOS_BENCH_CPU:-1}" = "1" ]; then
  echo "== trainer overhead on 8 forced CPU host devices =="
  JAX_PLATFORMS=cpu "$PY" bench/train_overhead.py --rounds 5
fi
