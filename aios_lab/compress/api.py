"""``aios.compress(job, method)``: compress a job's checkpoint, evaluate it, keep it as a variant of the job.

A variant lives in ``AIOS_HOME/jobs/JOB/variants/VARIANT/`` (``params.safetensors`` + ``report.json``),
written aside and renamed into place, then recorded in the catalog's ``variants`` table.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .. import config
from ..catalog import catalog
from ..errors import AiosError
from ..names import check_name
from . import params_file
from .evaluate import Report, evaluate
from .quant import compress_params, parse_method

MAX_EVAL_ROWS = 10_000


# -- jobs, checkpoints, datasets (through their public APIs) ----------------------------------------
def get_job(job: Any) -> Any:
    """A Job handle from a name or a Job."""
    if isinstance(job, str):
        from ..jobs import job as job_by_name

        return job_by_name(job)
    if not hasattr(job, "checkpoints") or not hasattr(job, "params"):
        raise AiosError(f"expected a job name or a Job, not {type(job).__name__}")
    return job


def train_config(job: Any) -> dict[str, Any]:
    """The job's model spec, task, n_outputs, dataset and dataset version, as the job recorded them."""
    cfg = job.config
    return {
        "spec": cfg["train"]["model"],
        "task": cfg["task"],
        "n_outputs": cfg["n_outputs"],
        "dataset": cfg["dataset"],
        "dataset_version": cfg["dataset_version"],
    }


def resolve_checkpoint(job: Any, checkpoint: str | int | None = "latest") -> int:
    """The step of ``checkpoint`` ("latest", "best" or a step) among the job's finished checkpoints."""
    steps = sorted(job.checkpoints())
    if not steps:
        raise AiosError(
            f"job {job.name!r} has no checkpoint yet; wait until it saves one "
            f"(`%aios jobs` shows its step) and try again"
        )
    if checkpoint is None or checkpoint == "latest":
        return steps[-1]
    if checkpoint == "best":
        step = job.best_step()
        return int(step if step is not None else steps[-1])
    try:
        step = int(checkpoint)
    except (TypeError, ValueError):
        raise AiosError(f"--checkpoint {checkpoint!r}: use best, latest or a step number") from None
    if step not in steps:
        raise AiosError(f"job {job.name!r} has no checkpoint at step {step}; it has {', '.join(map(str, steps))}")
    return step


def dataset_of(tc: dict[str, Any]) -> Any:
    from ..data import get

    return get(tc["dataset"], tc["dataset_version"])


def eval_data(ds: Any, task: str, eval: str | None) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """Rows to evaluate on: a split of the job's dataset ``ds`` (default val, then test), ``DATASET`` or
    ``DATASET:SPLIT``."""
    if eval in ("none", "-", False):
        return None, None, None
    split = None
    if eval is None:
        split = next((s for s in ("val", "test", "train") if s in ds.splits), None)
    elif eval in ds.splits:
        split = eval
    else:
        name, _, split = str(eval).partition(":")
        from ..data import get

        other = get(name)
        if tuple(other.feature_shape) != tuple(ds.feature_shape):
            raise AiosError(
                f"--eval {eval}: its features have shape {tuple(other.feature_shape)}, the job's "
                f"model takes {tuple(ds.feature_shape)}"
            )
        ds, split = other, split or next((s for s in ("test", "val", "train") if s in other.splits), None)
        if split not in ds.splits:
            raise AiosError(f"--eval {eval}: dataset {name!r} has splits {', '.join(ds.splits)}")
    if split is None:
        raise AiosError(f"--eval {eval}: dataset {ds.name!r} has no split of that name; it has {', '.join(ds.splits)}")
    x, y = ds.load(split)
    cap = MAX_EVAL_ROWS if task != "lm" else MAX_EVAL_ROWS // 10
    x, y = x[:cap], y[:cap]
    return x, y, f"{ds.name}@{ds.version}:{split} ({len(x)} rows)"


# -- variants ---------------------------------------------------------------------------------------
def variants(job: Any = None) -> list[dict[str, Any]]:
    """Variants recorded in the catalog (of one job, or all), with their reports parsed."""
    q, args = "SELECT * FROM variants", ()
    if job is not None:
        q, args = q + " WHERE job=?", (job if isinstance(job, str) else job.name,)
    rows = [dict(r) for r in catalog().query(q + " ORDER BY job, created", args)]
    for r in rows:
        r["report"] = json.loads(r["report"])
    return rows


def find_variant(job_name: str, variant: str) -> dict[str, Any]:
    """The catalog row of a job's variant given by its name (``int8``, ``prune-0.5-int8``) or method."""
    names = [variant]
    try:
        names.append(parse_method(variant).variant)
    except AiosError:
        pass
    for name in names:
        r = catalog().one("SELECT * FROM variants WHERE job=? AND variant=?", (job_name, name))
        if r:
            return dict(r)
    have = [r["variant"] for r in variants(job_name)]
    raise AiosError(
        f"job {job_name!r} has no variant {variant!r}"
        + (f"; it has {', '.join(have)}" if have else f"; make one with %aios compress {job_name} --method ...")
    )


def load_variant(job_name: str, variant: str) -> tuple[Any, dict[str, Any]]:
    """(compressed params, catalog row) of a job's variant."""
    row = find_variant(job_name, variant)
    return params_file.load_tree(Path(row["path"]) / "params.safetensors"), row


def _write_variant(job_name: str, variant: str, qparams: Any, report: Report) -> Path:
    root = config.named("jobs", job_name, "variants")
    root.mkdir(parents=True, exist_ok=True)
    final = root / variant
    tmp = root / f".tmp-{variant}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        params_file.save_tree(tmp / "params.safetensors", qparams)
        report.path = str(final)
        (tmp / "report.json").write_text(json.dumps(report.to_json(), indent=1, default=_num))
        old = None
        if final.exists():
            old = root / f".old-{variant}-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
        os.rename(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _num(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


# -- the verb's twin --------------------------------------------------------------------------------
def compress(
    job: Any,
    method: str,
    eval: str | None = None,
    checkpoint: str | int | None = "latest",
    batch: int = 256,
    save: bool = True,
) -> Report:
    """Compress a job's checkpoint with ``method``, compare it with the original, keep it as a variant.

    >>> rep = aios.compress("digits-mlp", "int8")          # evaluated on the dataset's val split
    >>> rep.ratio, rep.delta, rep.path
    """
    from ..train.models import build

    m = parse_method(method)  # bad methods fail before anything is read or written
    j = get_job(job)
    check_name(j.name, "job")
    tc = train_config(j)
    step = resolve_checkpoint(j, checkpoint)
    ds = dataset_of(tc)
    x, y, label = eval_data(ds, tc["task"], eval)
    model = build(tc["spec"], tc["task"], int(tc["n_outputs"]), tuple(ds.feature_shape))
    params = j.params(step)
    qparams, info = compress_params(params, m)
    report = evaluate(model.apply, params, qparams, info, tc["task"], x, y, batch=batch, eval_name=label)
    report.job, report.checkpoint_step = j.name, step
    if not save:
        return report
    path = _write_variant(j.name, m.variant, qparams, report)
    with catalog().tx() as db:
        db.execute(
            "INSERT OR REPLACE INTO variants (job, variant, method, checkpoint_step, path, report, created) "
            "VALUES (?,?,?,?,?,?,?)",
            (j.name, m.variant, m.name, step, str(path), json.dumps(report.to_json(), default=_num), time.time()),
        )
    catalog().audit(
        "compress",
        f"{j.name}/{m.variant}",
        method=m.name,
        checkpoint_step=step,
        bytes=report.bytes_after,
        ratio=round(report.ratio, 3),
    )
    return report


__all__ = ["compress", "variants", "load_variant", "find_variant", "resolve_checkpoint", "train_config"]
