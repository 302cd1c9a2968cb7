"""``aios.train``, ``aios.job``, ``aios.jobs``, ``aios.devices``, ``aios.delete_job``: the Python API of jobs.

Reads (``job``, ``jobs``, ``devices``) only read the catalog; ``train`` records the job, runs one
scheduling pass and makes sure the queue keeper runs (see ``keeper.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from typing import Any

from ..catalog import catalog
from ..errors import Conflict, InvalidInput, NotFound
from ..names import check_name
from . import cluster_submit, job as joblib, keeper, limits, records
from .devices import gpu_stats, inventory
from .job import Job
from .paths import job_entry, remove_job_dir
from .policy import DEFAULT_PRIORITY, order
from .scheduler import MAX_AUTO_RESUMES, schedule, view

# TrainConfig fields that aios.train sets itself (from devices=, processes=, the dataset and the model)
SET_BY_JOBS = ("dataset", "model", "n_devices", "coordinator", "num_processes", "process_id")


def kernel_on_cpu() -> None:
    """Keep this process off the accelerators: checks run on JAX's CPU backend, workers own devices."""
    if "jax" not in sys.modules:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _n_devices(devices: int | str | None, total: int, kind: str) -> int:
    if devices in (None, "all"):
        return total
    try:
        return limits.check("devices", devices, limits.Bound(1, total))
    except InvalidInput:
        raise InvalidInput(
            f"--devices {limits.show(devices)}: this machine has {total} {kind} device(s) (0..{total - 1}); "
            f"ask for 1..{total} or 'all'"
        ) from None


def _train_config(options: dict[str, Any], **set_here: Any) -> Any:
    """A validated TrainConfig from the options given; what is not given keeps TrainConfig's default."""
    from ..train.config import TrainConfig

    clash = sorted(set(options) & set(SET_BY_JOBS))
    if clash:
        raise InvalidInput(f"unknown training option {clash[0]}; aios.train sets it from its own arguments")
    return TrainConfig.for_job(**options, **set_here)


def train(
    name: str,
    *,
    dataset: str,
    model: str | dict = "mlp",
    devices: int | str | None = "all",
    priority: int = DEFAULT_PRIORITY,
    processes: int | None = None,
    max_retries: int | None = None,
    dataset_version: int | None = None,
    model_config: dict[str, Any] | None = None,
    wait: bool = False,
    on: str | None = None,
    hosts: int | None = None,
    devices_per_host: int | None = None,
    checkpoint_dir: str | None = None,
    init_from: str | None = None,
    **options: Any,
) -> Job:
    """Record a training job and start it in a detached worker as soon as its devices are free.

    ``options`` are TrainConfig's fields (``steps``, ``batch``, ``lr``, ``optimizer``, ``shard``,
    ``precision``, ``checkpoint_every``, ``eval_every``, ``seed``, ``task``, ``warmup``,
    ``weight_decay``, ``clip``, ``lora``, ``remat``, ...); those not given (or None) keep TrainConfig's defaults.

    ``model`` may be a registry language model, ``NAME[:VERSION|ALIAS]``: training starts from its weights
    (``init_from``: from another registry version of the same architecture instead); ``lora="r=16,
    alpha=32,targets=attn"`` trains low-rank adapters only, over the frozen base.

    ``on="ray"`` runs the job as a gang on the connected Ray cluster: ``hosts`` processes of
    ``devices_per_host`` devices each, checkpoints in ``checkpoint_dir/NAME`` (a path every host and this
    machine share, or a ``gs://`` / ``s3://`` URI; default: the job's own folder here).

    >>> job = aios.train("digits-mlp", dataset="digits", model="mlp", devices=8, steps=300, batch=128)
    >>> job.wait()
    'succeeded'
    >>> aios.train("big", dataset="digits", on="ray", hosts=2, devices_per_host=4, checkpoint_dir="/shared/ckpt")
    """
    kernel_on_cpu()
    from ..data import get as get_dataset
    from ..train import models
    from ..train.trainer import task_and_outputs

    check_name(name, "job")
    if records.row(name) is not None:
        raise Conflict(f"a job named {name!r} exists already; `%aios resume {name}` continues it, or pick a new name")
    priority = limits.check("priority", priority)
    max_retries = MAX_AUTO_RESUMES if max_retries is None else limits.check("max_retries", max_retries)
    gang = None
    if cluster_submit.place(on, hosts, devices_per_host, checkpoint_dir) == "ray":
        gang = cluster_submit.shape(hosts, devices_per_host, devices, processes)
        n, processes = gang.hosts * gang.devices_per_host, gang.hosts
    else:
        inv = inventory()
        n = _n_devices(devices, inv.count, inv.kind)
    cfg = _train_config(  # checked before any dataset or model is read
        options, n_devices=n, num_processes=processes, dataset_version=dataset_version
    )
    if n % cfg.num_processes:
        raise InvalidInput(f"{n} devices cannot be split evenly over {cfg.num_processes} processes")
    ds = get_dataset(dataset, cfg.dataset_version)
    if "train" not in ds.splits:
        raise InvalidInput(f"dataset {dataset!r} has no train split; declare it with --split train=...")
    task, n_outputs = task_and_outputs(ds, cfg.task)
    spec = models.prepare(models.resolve(model, **(model_config or {})), ds, init_from=init_from, lora=cfg.lora)
    x = ds.arrays("train")[0][:2]
    built = models.build(spec, task, n_outputs, ds.feature_shape, lora=cfg.lora, remat=cfg.remat)
    models.check(built, task, n_outputs, x)
    cfg = dataclasses.replace(cfg, dataset=ds.name, dataset_version=ds.version, model=spec, task=task)
    config = {
        "dataset": ds.name,
        "dataset_version": ds.version,
        "task": task,
        "n_outputs": n_outputs,
        "model": model if isinstance(model, str) else spec.get("name"),
        "train": json.loads(cfg.to_json()),
        "max_retries": max_retries,
        "processes": cfg.num_processes,
    }
    if gang is not None:  # the cluster answers, can hold the gang, and every host reaches its files
        config.update(cluster_submit.check(name, gang, checkpoint_dir, ds))
    from ..provenance import capture  # what launched it: git commit and dirty state, notebook, cell hash

    config["provenance"] = capture()
    now = time.time()
    with catalog().tx() as db:
        if job_entry(name).exists() or job_entry(name).is_symlink():  # left by a deletion cut short: no one uses it
            remove_job_dir(name)
        db.execute(
            "INSERT INTO jobs (name, state, config, priority, n_devices, steps, created, updated) "
            "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
            (name, json.dumps(config), priority, n, cfg.steps, now, now),
        )
    where = {"on": "ray", "hosts": gang.hosts} if gang else {}
    catalog().audit("job.submit", name, dataset=f"{ds.name}@{ds.version}", model=config["model"], devices=n, **where)
    schedule()
    keeper.ensure()
    job = Job(name)
    if wait:
        job.wait()
    return job


def job(name: str) -> Job:
    """Reattach to a job by name, from any process."""
    check_name(name, "job")
    return Job(name)


def jobs() -> list[Job]:
    """Every job, oldest first, as the catalog has them now (one deleted meanwhile is left out)."""
    out = []
    for r in records.rows():
        with contextlib.suppress(NotFound):
            out.append(Job(r["name"]))
    return out


def delete_job(name: str, force: bool = False) -> int:
    """``%aios job delete NAME``: remove a stopped job and its files; returns the bytes freed."""
    return joblib.delete(check_name(name, "job"), force=force)


def devices() -> dict[str, Any]:
    """Every device with the job holding it, the queue (local jobs, then cluster jobs, each in start order),
    and the connected Ray cluster's nodes as last seen (``"cluster"``: None when none is connected)."""
    from ..cluster import devices as cluster_devices

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
    waiting = order(view(r) for r in records.rows(("queued",)))
    queue = [
        {
            "name": j.name,
            "n_devices": j.n_devices,
            "priority": j.priority,
            "created": j.created,
            "on": "ray" if j.gang else "local",
            **({"hosts": j.gang.hosts, "devices_per_host": j.gang.devices_per_host} if j.gang else {}),
        }
        for j in sorted(waiting, key=lambda j: j.gang is not None)
    ]
    return {"kind": inv.kind, "devices": devs, "queue": queue, "cluster": cluster_devices()}
