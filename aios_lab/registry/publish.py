"""Publishing: parameters (+ definition, signature, metrics, lineage) become an immutable model version.

Layout of ``AIOS_HOME/models/NAME/vN/`` (read by ``load`` and by the serving process)::

    model.json          format, the model spec (source and config, JSON), task, input shape, n_outputs
    params.safetensors  the parameters; compressed tensors as P::q, P::scale, P::mask (see compress.params_file)
    signature.json      V2-style inputs/outputs: name, datatype ("FP32", "INT32"), shape with -1 batch axis
    metrics.json        evaluation metrics
    lineage.json        dataset name+version, job, checkpoint step, compression method, code hash
    manifest.json       sha256 and size of every other file; its own sha256 is in the catalog row

The directory is written aside, made read-only, renamed to ``vN`` and only then recorded in the catalog.
No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import math
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..catalog import catalog, next_version, user
from ..errors import AiosError
from ..names import check_name
from .versions import ModelVersion, check_alias, get, models_dir

FORMAT = "aios-model/1"
V2_DATATYPES = {
    "float32": "FP32",
    "float16": "FP16",
    "bfloat16": "BF16",
    "float64": "FP64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "bool": "BOOL",
}
FILES = ("model.json", "params.safetensors", "signature.json", "metrics.json", "lineage.json")


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def code_hash(spec: dict[str, Any]) -> str:
    """sha256 over the spec (which holds a cell's source) and the source file defining a built-in or module model."""
    h = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
    origin = None
    if spec.get("kind") == "builtin":
        from ..train import builtins

        origin = inspect.getsourcefile(builtins)
    elif spec.get("kind") == "module":
        try:
            found = importlib.util.find_spec(str(spec.get("target", "")).partition(":")[0])
            origin = found.origin if found else None
        except (ImportError, ValueError):
            origin = None
    if origin and os.path.isfile(origin):
        h.update(Path(origin).read_bytes())
    return h.hexdigest()


def _json(obj: Any, what: str) -> bytes:
    try:
        return json.dumps(obj, indent=1, sort_keys=True, allow_nan=False, default=_plain).encode() + b"\n"
    except (TypeError, ValueError) as exc:
        raise AiosError(f"{what} must be plain JSON (numbers, strings, lists, dicts): {exc}") from None


def _plain(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    if isinstance(v, np.ndarray) and v.size <= 64:
        return v.tolist()
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"{type(v).__name__} is not JSON")


def _clean_metrics(metrics: dict[str, Any] | None) -> dict[str, Any]:
    out = {}
    for k, v in (metrics or {}).items():
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[str(k)] = v
    return out


def signature_for(model: Any, params: Any, task: str, input_shape: tuple, input_dtype: Any) -> dict[str, Any]:
    """The V2 signature from an abstract forward pass (nothing is computed), batch axis -1."""
    import jax

    from ..compress.qmodel import dequantizing

    x = jax.ShapeDtypeStruct((2, *input_shape), np.dtype(input_dtype))
    abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), params)
    try:
        out = jax.eval_shape(dequantizing(model.apply), abstract, x)
    except AiosError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise AiosError(
            f"the parameters do not fit the model on inputs of shape {tuple(input_shape)}: "
            f"{type(exc).__name__}: {first}"
        ) from None
    if not hasattr(out, "shape"):
        raise AiosError(f"the model returns {type(out).__name__}, not one array; a registry model needs one output")

    def dt(d: Any) -> str:
        name = np.dtype(d).name
        if name not in V2_DATATYPES:
            raise AiosError(f"dtype {name} has no Open Inference Protocol datatype")
        return V2_DATATYPES[name]

    return {
        "inputs": [{"name": "input", "datatype": dt(input_dtype), "shape": [-1, *map(int, input_shape)]}],
        "outputs": [
            {
                "name": "logits" if task in ("classification", "lm") else "output",
                "datatype": dt(out.dtype),
                "shape": [-1, *map(int, out.shape[1:])],
            }
        ],
    }


def publish_params(
    model: str,
    spec: dict[str, Any],
    params: Any,
    *,
    task: str,
    input_shape: tuple | list,
    n_outputs: int,
    metrics: dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
    alias: str | None = None,
    method: str | None = None,
    input_dtype: Any = None,
) -> ModelVersion:
    """Write ``params`` (plain or compressed) as the next immutable version of ``model``.

    Everything is checked first (names, spec, that the parameters run in the model on ``input_shape``);
    then the artifact is written to a temporary directory, made read-only, renamed to ``vN`` and recorded
    in the catalog (with the alias, if given) in one transaction; the publish is appended to the audit log.
    """
    from ..compress import params_file
    from ..compress.quant import parse_method
    from ..train.models import TASKS, build

    check_name(model, "model")
    if alias is not None:
        check_alias(alias)
    if task not in TASKS:
        raise AiosError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    if not isinstance(spec, dict) or "kind" not in spec:
        raise AiosError("spec must be a model spec dict such as {'kind': 'builtin', 'name': 'mlp', 'config': {}}")
    if method is not None:
        method = parse_method(method).name
    input_shape = tuple(int(s) for s in input_shape)
    input_dtype = np.dtype(input_dtype or (np.int32 if task == "lm" else np.float32))
    n_outputs = int(n_outputs)
    built = build(spec, task, n_outputs, input_shape)
    signature = signature_for(built, params, task, input_shape, input_dtype)
    definition = {
        "format": FORMAT,
        "name": model,
        "spec": spec,
        "task": task,
        "input_shape": list(input_shape),
        "input_dtype": input_dtype.name,
        "n_outputs": n_outputs,
        "method": method,
    }
    lineage = {"method": method, "code_hash": code_hash(spec), **(lineage or {})}
    lineage.setdefault("aios_lab", _version())
    metrics = _clean_metrics(metrics)
    blobs = {
        "model.json": _json(definition, "the model spec"),
        "signature.json": _json(signature, "signature"),
        "metrics.json": _json(metrics, "metrics"),
        "lineage.json": _json(lineage, "lineage"),
        "params.safetensors": params_file.tree_to_bytes(params, {"format": "np"}),
    }
    manifest = {
        "algorithm": "sha256",
        "model": model,
        "files": {n: {"sha256": sha256_bytes(b), "bytes": len(b)} for n, b in sorted(blobs.items())},
    }
    blobs["manifest.json"] = _json(manifest, "manifest")
    manifest_sha = sha256_bytes(blobs["manifest.json"])
    total = sum(len(b) for b in blobs.values())

    root = models_dir(model)
    root.mkdir(parents=True, exist_ok=True)
    _sweep(root)
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        for name, b in blobs.items():
            with open(tmp / name, "wb") as f:
                f.write(b)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp / name, 0o444)
        cat = catalog()
        with cat.tx() as db:
            on_disk = [int(p.name[1:]) for p in root.iterdir() if re.fullmatch(r"v\d+", p.name)]
            version = max(next_version(db, "models", model), max(on_disk, default=0) + 1)
            final = root / f"v{version}"
            os.rename(tmp, final)
            db.execute(
                "INSERT INTO models (name, version, path, manifest_sha256, nbytes, signature, metrics, lineage, "
                "created_by, created) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    model,
                    version,
                    str(final),
                    manifest_sha,
                    total,
                    json.dumps(signature),
                    json.dumps(metrics, default=_plain),
                    json.dumps(lineage, default=_plain),
                    user(),
                    time.time(),
                ),
            )
            if alias is not None:
                old = db.execute("SELECT version FROM aliases WHERE model=? AND alias=?", (model, alias)).fetchone()
                db.execute(
                    "INSERT OR REPLACE INTO aliases (model, alias, version, updated) VALUES (?,?,?,?)",
                    (model, alias, version, time.time()),
                )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cat.audit(
        "publish",
        f"{model}:v{version}",
        manifest_sha256=manifest_sha,
        nbytes=total,
        method=method,
        job=lineage.get("job"),
        checkpoint_step=lineage.get("checkpoint_step"),
    )
    if alias is not None:
        cat.audit(
            "alias",
            f"{model}@{alias}",
            version=version,
            previous=int(old[0]) if old else None,
            manifest_sha256=manifest_sha,
        )
    return get(model, version)


def publish(
    job: Any,
    variant: str | None = None,
    checkpoint: str | int | None = None,
    as_: str | None = None,
    alias: str | None = None,
    *,
    model: str | None = None,
) -> ModelVersion:
    """``%aios publish JOB [--variant V] [--checkpoint C] --as MODEL [--alias A]``: a job's checkpoint (or
    compressed variant) becomes the next version of MODEL, with lineage back to the job and dataset.

    >>> mv = aios.publish("digits-mlp", variant="int8", as_="digits", alias="production")
    """
    from ..compress import api as capi

    name = as_ or model
    if not name:
        raise AiosError("say which model to publish as: --as MODEL (as_='MODEL' in Python)")
    check_name(name, "model")
    if alias is not None:
        check_alias(alias)
    j = capi.get_job(job)
    tc = capi.train_config(j)
    metrics: dict[str, Any] = {}
    if variant is not None:
        params, row = capi.load_variant(j.name, variant)
        step, method = int(row["checkpoint_step"]), row["method"]
        if checkpoint is not None and capi.resolve_checkpoint(j, checkpoint) != step:
            raise AiosError(
                f"variant {row['variant']!r} of {j.name!r} was made from step {step}, not from "
                f"--checkpoint {checkpoint}; compress that checkpoint first or drop --checkpoint"
            )
        rep = json.loads(row["report"])
        if rep.get("metric_after") is not None:
            metrics.update(
                {
                    rep["metric"]: rep["metric_after"],
                    f"{rep['metric']}_uncompressed": rep["metric_before"],
                    "eval": rep.get("eval"),
                }
            )
        metrics.update(
            compression_ratio=round(rep.get("ratio", 0.0), 4), max_abs_logit_diff=rep.get("max_abs_logit_diff")
        )
    else:
        step = capi.resolve_checkpoint(j, checkpoint)
        params, method = j.params(step), None
        metrics = _job_metrics(j, step)
    ds = capi.dataset_of(tc)
    lineage = {
        "dataset": ds.name,
        "dataset_version": ds.version,
        "dataset_hash": getattr(ds, "hash", None),
        "job": j.name,
        "checkpoint_step": step,
        "method": method,
        "variant": row["variant"] if variant else None,
    }
    return publish_params(
        name,
        tc["spec"],
        params,
        task=tc["task"],
        input_shape=tuple(ds.feature_shape),
        n_outputs=tc["n_outputs"],
        metrics=metrics,
        lineage=lineage,
        alias=alias,
        method=method,
    )


def _job_metrics(job: Any, step: int) -> dict[str, Any]:
    """The job's evaluation at ``step`` (or the last one before it): split, step and its numbers."""
    try:
        rows = [r for r in job.metrics() if r.get("split") and r.get("step", 0) <= step]
    except Exception:  # metrics are a nicety; never fail a publish over them
        return {}
    if not rows:
        return {}
    last = rows[-1]
    keep = {k: v for k, v in last.items() if k not in ("time", "split", "step") and isinstance(v, (int, float))}
    return {**keep, "split": last["split"], "eval_step": last["step"]}


def _sweep(root: Path, older_than: float = 3600.0) -> None:
    """Remove what a publisher killed mid-write left behind (never visible as a version)."""
    now = time.time()
    for p in root.glob(".tmp-*"):
        try:
            if now - p.stat().st_mtime > older_than:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _version() -> str:
    from .. import __version__

    return __version__


__all__ = ["publish", "publish_params", "code_hash", "signature_for", "FORMAT", "FILES"]
