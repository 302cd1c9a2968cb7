"""``aios.compress(job, method)``: compress a job's checkpoint, evaluate it, keep it as a variant of the job.

A variant lives in ``AIOS_HOME/jobs/JOB/variants/VARIANT/`` (``params.safetensors`` + ``report.json``),
published with :mod:`aios_lab.atomic` inside the transaction that records it in the ``variants`` table.
Other parts read variants only through :func:`variant` and :func:`variants`.

A language-model job's checkpoint is compressed whole (LoRA adapters merged into their base first), with
per-layer scales, int4 groups and pruning thresholds for its stacked layers and per-row scales for its
embeddings (``train.lm_model.compress_layout``); the report gives loss, accuracy and perplexity over the
learned tokens of the evaluation split, before and after.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic, config
from ..catalog import catalog
from ..errors import InvalidInput, NotFound
from ..names import check_name
from . import params_file
from .evaluate import Report, evaluate
from .quant import compress_params, parse_method

MAX_EVAL_ROWS = 10_000
LM_EVAL_TOKENS = 64 * 1024  # a language model is evaluated on at most this many positions
LM_BATCH_LOGITS = 1 << 24  # and in batches of at most this many logits (batch x positions x vocabulary)


# -- jobs, checkpoints, datasets (through their public APIs) ----------------------------------------
def _job(job: Any) -> Any:
    """A Job handle from a name (through ``aios.job``) or a Job."""
    if isinstance(job, str):
        from ..jobs import job as job_by_name

        return job_by_name(job)
    if not hasattr(job, "checkpoints") or not hasattr(job, "params"):
        raise InvalidInput(f"expected a job name or a Job, not {type(job).__name__}")
    return job


def _train_config(job: Any) -> dict[str, Any]:
    """The job's model spec, task, n_outputs, dataset and dataset version, as the job recorded them."""
    cfg = job.config
    return {
        "spec": cfg["train"]["model"],
        "task": cfg["task"],
        "n_outputs": cfg["n_outputs"],
        "dataset": cfg["dataset"],
        "dataset_version": cfg["dataset_version"],
    }


def _dataset(tc: dict[str, Any]) -> Any:
    from ..data import get
    from ..train.lm_data import view

    return view(get(tc["dataset"], tc["dataset_version"]))  # a tokenized dataset with its masks


def _eval_data(
    ds: Any, task: str, eval: str | None
) -> tuple[np.ndarray | None, np.ndarray | None, str | None, str | None]:
    """Rows to evaluate on: a split of the job's dataset ``ds`` (default val, then test), ``DATASET`` or
    ``DATASET:SPLIT``; with a label for the report and the split's name."""
    if eval in ("none", "-", False):
        return None, None, None, None
    split = None
    if eval is None:
        split = next((s for s in ("val", "test", "train") if s in ds.splits), None)
    elif eval in ds.splits:
        split = eval
    else:
        name, _, split = str(eval).partition(":")
        from ..data import get
        from ..train.lm_data import view

        other = view(get(name))
        if tuple(other.feature_shape) != tuple(ds.feature_shape):
            raise InvalidInput(
                f"--eval {eval}: its features have shape {tuple(other.feature_shape)}, the job's "
                f"model takes {tuple(ds.feature_shape)}"
            )
        ds, split = other, split or next((s for s in ("test", "val", "train") if s in other.splits), None)
        if split not in ds.splits:
            raise InvalidInput(f"--eval {eval}: dataset {name!r} has splits {', '.join(ds.splits)}")
    if split is None:
        raise InvalidInput(
            f"--eval {eval}: dataset {ds.name!r} has no split of that name; it has {', '.join(ds.splits)}"
        )
    x, y = ds.load(split)
    cap = MAX_EVAL_ROWS if task != "lm" else MAX_EVAL_ROWS // 10
    if task == "lm":  # a language model's logits are rows x positions x vocabulary: keep them a few MB
        cap = min(cap, max(1, LM_EVAL_TOKENS // int(np.shape(x)[-1])))
    x, y = x[:cap], y[:cap]
    return x, y, f"{ds.name}@{ds.version}:{split} ({len(x)} rows)", split


# -- variants: the public door for other parts --------------------------------------------------------
def variants(job: Any = None) -> list[dict[str, Any]]:
    """What is known of each variant (of one job, or all): job, variant, method, checkpoint_step, path,
    report (a dict) and created."""
    q, args = "SELECT * FROM variants", ()
    if job is not None:
        q, args = q + " WHERE job=?", (job if isinstance(job, str) else job.name,)
    return [_meta(r) for r in catalog().query(q + " ORDER BY job, created", args)]


def variant(job: Any, name: str) -> tuple[Any, dict[str, Any]]:
    """``(compressed params, meta)`` of a job's variant given by its name (``int8``, ``prune-0.5-int8``) or
    method (``prune:0.5+int8``); ``meta`` as in :func:`variants`."""
    meta = _find(job if isinstance(job, str) else job.name, name)
    return params_file.load_tree(Path(meta["path"]) / "params.safetensors"), meta


def _meta(row: Any) -> dict[str, Any]:
    meta = dict(row)
    meta["report"] = json.loads(meta["report"])
    return meta


def _find(job_name: str, variant: str) -> dict[str, Any]:
    names = [variant]
    try:
        names.append(parse_method(variant).variant)
    except InvalidInput:
        pass
    for name in names:
        r = catalog().one("SELECT * FROM variants WHERE job=? AND variant=?", (job_name, name))
        if r:
            return _meta(r)
    have = [r["variant"] for r in variants(job_name)]
    raise NotFound(
        f"job {job_name!r} has no variant {variant!r}"
        + (f"; it has {', '.join(have)}" if have else f"; make one with %aios compress {job_name} --method ...")
    )


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
    j = _job(job)
    check_name(j.name, "job")
    tc = _train_config(j)
    step = j.checkpoint_step(checkpoint)
    ds = _dataset(tc)
    x, y, label, split = _eval_data(ds, tc["task"], eval)
    model = build(tc["spec"], tc["task"], int(tc["n_outputs"]), tuple(ds.feature_shape))
    params, layout = j.params(step), None
    if tc["spec"].get("kind") == "lm":
        from ..train import lm_job, lm_model

        params = lm_job.dense_params(tc["spec"], j.config["train"].get("lora"), params)
        layout = lm_model.compress_layout
        batch = max(1, min(batch, LM_BATCH_LOGITS // (int(np.prod(ds.feature_shape[1:])) * int(tc["n_outputs"]))))
    qparams, info = compress_params(params, m, layout=layout)
    report = evaluate(model.apply, params, qparams, info, tc["task"], x, y, batch=batch, eval_name=label, split=split)
    report.job, report.checkpoint_step = j.name, step
    if not save:
        return report
    final = config.named("jobs", j.name, "variants", m.variant)
    report.path = str(final)
    with atomic.staged("variant", j.name) as tmp:
        params_file.save_tree(tmp / "params.safetensors", qparams)
        (tmp / "report.json").write_text(json.dumps(report.to_json(), indent=1, default=_num))
        atomic.seal(tmp, read_only=True)
        published = False
        try:
            with catalog().tx() as db:
                atomic.publish(tmp, final)  # a variant made again replaces the old one
                published = True
                db.execute(
                    "INSERT OR REPLACE INTO variants (job, variant, method, checkpoint_step, path, report, created) "
                    "VALUES (?,?,?,?,?,?,?)",
                    (
                        j.name,
                        m.variant,
                        m.name,
                        step,
                        str(final),
                        json.dumps(report.to_json(), default=_num),
                        time.time(),
                    ),
                )
        except BaseException:
            if published:  # the old variant's files are gone too: forget it rather than describe the wrong files
                atomic.discard(final)
                with catalog().tx() as db:
                    db.execute("DELETE FROM variants WHERE job=? AND variant=?", (j.name, m.variant))
            raise
    catalog().audit(
        "compress",
        f"{j.name}/{m.variant}",
        method=m.name,
        checkpoint_step=step,
        bytes=report.bytes_after,
        ratio=round(report.ratio, 3),
    )
    return report


__all__ = ["compress", "variant", "variants"]
