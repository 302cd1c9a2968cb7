"""The device inventory, found without touching an accelerator (the kernel never holds one).

GPUs are counted through NVML, TPUs through their device files; on a CPU-only machine the
inventory is the number of XLA host devices that ``JAX_NUM_CPU_DEVICES`` or
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` set in the launching environment, else
``DEFAULT_CPU_DEVICES``. A job that gets ``k`` of them runs with exactly those devices visible.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

DEFAULT_CPU_DEVICES = 8  # forced XLA host devices when nothing says otherwise


@dataclass(frozen=True)
class Inventory:
    kind: str  # "gpu" | "tpu" | "cpu"
    count: int
    names: tuple[str, ...]


def cpu_device_count(env: dict[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    if env.get("JAX_NUM_CPU_DEVICES"):
        return int(env["JAX_NUM_CPU_DEVICES"])
    match = re.search(r"--xla_force_host_platform_device_count=(\d+)", env.get("XLA_FLAGS", ""))
    return int(match.group(1)) if match else DEFAULT_CPU_DEVICES


def _gpus() -> list[str]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        return [
            _s(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)))
            for i in range(pynvml.nvmlDeviceGetCount())
        ]
    finally:
        pynvml.nvmlShutdown()


def _s(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def inventory() -> Inventory:
    """What this machine has for jobs. ``AIOS_DEVICES=cpu`` forces the CPU inventory."""
    if os.environ.get("AIOS_DEVICES") != "cpu":
        gpus = _gpus()
        if gpus:
            return Inventory("gpu", len(gpus), tuple(gpus))
        tpus = sorted(glob.glob("/dev/accel*")) or sorted(glob.glob("/dev/vfio/[0-9]*"))
        if tpus:
            return Inventory("tpu", len(tpus), tuple(f"TPU {i}" for i in range(len(tpus))))
    n = cpu_device_count()
    return Inventory("cpu", n, tuple(f"CPU host device {i}" for i in range(n)))


def worker_env(kind: str, ids: list[int]) -> dict[str, str]:
    """Environment that makes exactly ``ids`` visible to one worker process."""
    env = dict(os.environ)
    env.pop("JAX_NUM_CPU_DEVICES", None)
    if kind == "gpu":
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ids))
        env.pop("JAX_PLATFORMS", None)
    elif kind == "tpu":
        env["TPU_VISIBLE_CHIPS"] = ",".join(map(str, ids))
        env["TPU_PROCESS_BOUNDS"] = "1,1,1"
        env.pop("JAX_PLATFORMS", None)
    else:
        flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={len(ids)}".strip()
        env["JAX_PLATFORMS"] = "cpu"
    return env


def gpu_stats() -> dict[int, dict]:
    """Memory and utilisation per NVIDIA GPU (empty without NVML)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return {}
    try:
        out = {}
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem, util = pynvml.nvmlDeviceGetMemoryInfo(h), pynvml.nvmlDeviceGetUtilizationRates(h)
            out[i] = {"memory_used": int(mem.used), "memory_total": int(mem.total), "utilization": int(util.gpu)}
        return out
    finally:
        pynvml.nvmlShutdown()
