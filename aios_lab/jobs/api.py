"""``aios.train``, ``aios.job``, ``aios.jobs``, ``aios.devices``: the Python API of jobs."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any

from ..catalog import catalog
from ..errors import AiosError
from ..names import check_name
from . import records
from .devices import gpu_stats, inventory
from .job import Job
from .scheduler import MAX_AUTO_RESUMES, schedule


def kernel_on_cpu() -> None:
    """Keep this process off the accelerators: checks run on JAX's CPU backend, workers own devices."""
    if "jax" not in sys.modules:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _n_devices(devices: int | str | None, total: int, kind: str) -> int:
    if devices in (None, "all"):
        return total
    try:
        n = int(devices)
    except (TypeError, ValueError):
        raise AiosError(f"--devices takes a number or 'all', not {devices!r}") from None
    if n < 1 or n > total:
        raise AiosError(
            f"--devices {n}: this machine has {total} {kind} device(s) (0..{total - 1}); ask for 1..{total} or 'all'"
        )
    return n


def train(
    name: str,
    *,
    dataset: str,
    model: str | dict = "mlp",
    devices: int | str | None = "all",
    steps: int = 500,
    batch: int = 128,
    lr: float = 1e-3,
    optimizer: str = "adamw",
    shard: str = "dp",
    precision: str = "fp32",
    checkpoint_every: int | None = None,
    eval_every: int | None = None,
    seed: int = 0,
    priority: int = 0,
    wait: bool = False,
    task: str | None = None,
    warmup: int | None = None,
    weight_decay: float = 1e-4,
    clip: float | None = 1.0,
    max_retries: int | None = None,
    processes: int = 1,
    dataset_version: int | None = None,
    model_config: dict[str, Any] | None = None,
) -> Job:
    """Record a training job and start it in a detached worker as soon as its devices are free.

    >>> job = aios.train("digits-mlp", dataset="digits", model="mlp", devices=8, steps=300, batch=128)
    >>> job.wait()
    'succeeded'
    """
    kernel_on_cpu()
    from ..data import get as get_dataset
    from ..train import models
    from ..train.trainer import TrainConfig, task_and_outputs

    check_name(name, "job")
    if records.row(name) is not None:
        raise AiosError(f"a job named {name!r} exists already; `%aios resume {name}` continues it, or pick a new name")
    inv = inventory()
    n = _n_devices(devices, inv.count, inv.kind)
    if processes < 1 or n % processes:
        raise AiosError(f"{n} devices cannot be split evenly over {processes} processes")
    cfg = TrainConfig(  # checked before any dataset or model is read
        dataset=dataset,
        dataset_version=dataset_version,
        model=model,
        task=task,
        n_devices=n,
        steps=steps,
        batch=batch,
        lr=lr,
        optimizer=optimizer,
        shard=shard,
        precision=precision,
        checkpoint_every=checkpoint_every or max(10, steps // 10),
        seed=seed,
        eval_every=max(10, steps // 10) if eval_every is None else eval_every,
        warmup=min(100, steps // 10) if warmup is None else warmup,
        weight_decay=weight_decay,
        clip=clip,
        num_processes=processes,
    ).validate()
    ds = get_dataset(dataset, dataset_version)
    if "train" not in ds.splits:
        raise AiosError(f"dataset {dataset!r} has no train split; declare it with --split train=...")
    task, n_outputs = task_and_outputs(ds, task)
    spec = models.resolve(model, **(model_config or {}))
    x = ds.arrays("train")[0][:2]
    models.check(models.build(spec, task, n_outputs, ds.feature_shape), task, n_outputs, x)
    cfg = dataclasses.replace(cfg, dataset=ds.name, dataset_version=ds.version, model=spec, task=task)
    config = {
        "dataset": ds.name,
        "dataset_version": ds.version,
        "task": task,
        "n_outputs": n_outputs,
        "model": model if isinstance(model, str) else spec.get("name"),
        "train": json.loads(cfg.to_json()),
        "max_retries": MAX_AUTO_RESUMES if max_retries is None else max_retries,
        "processes": processes,
    }
    now = time.time()
    with catalog().tx() as db:
        db.execute(
            "INSERT INTO jobs (name, state, config, priority, n_devices, steps, created, updated) "
            "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
            (name, json.dumps(config), priority, n, steps, now, now),
        )
    catalog().audit("job.submit", name, dataset=f"{ds.name}@{ds.version}", model=config["model"], devices=n)
    schedule()
    job = Job(name)
    if wait:
        job.wait()
    return job


def job(name: str) -> Job:
    """Reattach to a job by name, from any process."""
    check_name(name, "job")
    return Job(name)


def jobs() -> list[Job]:
    """Every job, oldest first (noticing dead workers and moving the queue first)."""
    schedule()
    return [Job(r["name"]) for r in records.rows()]


def devices() -> dict[str, Any]:
    """Every device with the job holding it, and the queue waiting for devices."""
    inv = inventory()
    holders = {}
    for r in records.rows(("running",)):
        for d in r["devices"]:
            holders[d] = r["name"]
    stats = gpu_stats() if inv.kind == "gpu" else {}
    devs = [
        {"id": i, "kind": inv.kind, "name": inv.names[i], "job": holders.get(i), **stats.get(i, {})}
        for i in range(inv.count)
    ]
    queue = [
        {"name": r["name"], "n_devices": r["n_devices"], "priority": r["priority"], "created": r["created"]}
        for r in sorted(records.rows(("queued",)), key=lambda r: (-r["priority"], r["created"]))
    ]
    return {"kind": inv.kind, "devices": devs, "queue": queue}
