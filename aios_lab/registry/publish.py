"""Publishing: parameters (+ definition, signature, metrics, lineage) become an immutable model version.

Layout of ``AIOS_HOME/models/NAME/vN/`` (read by ``load`` and by the serving process)::

    model.json          format, the model spec (source and config, JSON), task, input shape, n_outputs
    params.safetensors  the parameters; compressed tensors as P::q, P::scale, P::mask (see compress.params_file)
    signature.json      V2-style inputs/outputs: name, datatype ("FP32", "INT32"), shape with -1 batch axis
    metrics.json        evaluation metrics
    lineage.json        dataset name+version, job, checkpoint step, compression method, code hash
    manifest.json       sha256 and size of every other file; its own sha256 is in the catalog row
    ...                 a language model adds its Hugging Face tokenizer files (see registry.lm_artifact)

The directory is written aside, sealed (fsync, private and read-only) and renamed to ``vN`` with
:mod:`aios_lab.atomic`, inside the catalog transaction that records it (:func:`commit`).
No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic, config, metric_names as mn
from ..catalog import catalog, next_version, user
from ..errors import AiosError, InvalidInput
from ..names import check_name
from . import aliases
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
        raise InvalidInput(f"{what} must be plain JSON (numbers, strings, lists, dicts): {exc}") from None


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
        raise InvalidInput(
            f"the parameters do not fit the model on inputs of shape {tuple(input_shape)}: "
            f"{type(exc).__name__}: {first}"
        ) from None
    if not hasattr(out, "shape"):
        raise InvalidInput(f"the model returns {type(out).__name__}, not one array; a registry model needs one output")

    def dt(d: Any) -> str:
        name = np.dtype(d).name
        if name not in V2_DATATYPES:
            raise InvalidInput(f"dtype {name} has no Open Inference Protocol datatype")
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
    files: dict[str, bytes] | None = None,
) -> ModelVersion:
    """Write ``params`` (plain or compressed) as the next immutable version of ``model``.

    Everything is checked first (names, spec, that the parameters run in the model on ``input_shape``);
    then the artifact is written to a temporary directory, made read-only, renamed to ``vN`` and recorded
    in the catalog (with the alias, if given) in one transaction; the publish is appended to the audit log.
    ``files``: more files for the version (a language model's tokenizer and chat template; see
    ``registry.lm_artifact``). A language model spec (``{"kind": "lm", "config": ...}``) with a ``base``
    (``{"model", "version"}``) gets its base version's tokenizer files unless ``files`` brings them.
    """
    from ..compress import params_file
    from ..compress.quant import parse_method
    from ..train.models import TASKS, build
    from . import lm_artifact

    check_name(model, "model")
    if alias is not None:
        check_alias(alias)
        aliases.check_publish(model, alias)
    if task not in TASKS:
        raise InvalidInput(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    if not isinstance(spec, dict) or "kind" not in spec:
        raise InvalidInput("spec must be a model spec dict such as {'kind': 'builtin', 'name': 'mlp', 'config': {}}")
    if method is not None:
        method = parse_method(method).name
    input_shape = tuple(int(s) for s in input_shape)
    input_dtype = np.dtype(input_dtype or (np.int32 if task == "lm" else np.float32))
    n_outputs = int(n_outputs)
    files = dict(files or {})
    definition_extra: dict[str, Any] = {}
    if spec["kind"] == lm_artifact.KIND:
        cfg = lm_artifact.spec_config(spec)
        _check_lm_params(cfg, spec, params)
        signature = lm_artifact.signature(cfg)
        files = {**lm_artifact.base_files(spec, files), **files}
        definition_extra = lm_artifact.definition_extra(cfg, params, files)
    else:
        built = build(spec, task, n_outputs, input_shape)
        signature = signature_for(built, params, task, input_shape, input_dtype)
    bad = sorted(n for n in files if n in FILES or n == "manifest.json" or os.path.basename(n) != n or n[:1] == ".")
    if bad:
        raise InvalidInput(f"extra files cannot be named {', '.join(bad)}: use plain names, not {', '.join(FILES)}")
    definition = {
        "format": FORMAT,
        "name": model,
        "spec": spec,
        "task": task,
        "input_shape": list(input_shape),
        "input_dtype": input_dtype.name,
        "n_outputs": n_outputs,
        "method": method,
        **definition_extra,
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
        **{n: bytes(b) for n, b in files.items()},
    }
    with atomic.staged("model", model) as tmp:
        for name, b in blobs.items():
            (tmp / name).write_bytes(b)
        entries = {n: (sha256_bytes(b), len(b)) for n, b in blobs.items()}
        return commit(model, tmp, entries, signature, metrics, lineage, alias=alias, method=method)


def manifest_bytes(model: str, entries: dict[str, tuple[str, int]]) -> bytes:
    """manifest.json: the sha256 and size of every other file of a version."""
    manifest = {
        "algorithm": "sha256",
        "model": model,
        "files": {n: {"sha256": sha, "bytes": int(size)} for n, (sha, size) in sorted(entries.items())},
    }
    return _json(manifest, "manifest")


def commit(
    model: str,
    tmp: Path,
    entries: dict[str, tuple[str, int]],
    signature: dict[str, Any],
    metrics: dict[str, Any],
    lineage: dict[str, Any],
    *,
    alias: str | None = None,
    method: str | None = None,
    action: str = "publish",
) -> ModelVersion:
    """Write the manifest of the files in ``tmp`` (``entries``: name -> (sha256, bytes)), seal ``tmp``,
    rename it to the next ``vN`` and record it (and ``alias``) in one catalog transaction; then audit."""
    raw = manifest_bytes(model, entries)
    with config.open_private(tmp / "manifest.json", "wb") as f:
        f.write(raw)
    manifest_sha = sha256_bytes(raw)
    total = len(raw) + sum(size for _, size in entries.values())
    atomic.seal(tmp, read_only=True)
    cat = catalog()
    final: Path | None = None
    old = None
    try:
        with cat.tx() as db:
            version = next_version(db, "models", model)
            final = models_dir(model) / f"v{version}"
            atomic.publish(tmp, final)  # replaces a folder a crash left between rename and commit
            db.execute(
                "INSERT INTO models (name, version, path, manifest_sha256, nbytes, signature, metrics, "
                "lineage, created_by, created) VALUES (?,?,?,?,?,?,?,?,?,?)",
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
            if alias is not None:  # a protected alias that points elsewhere is refused (use promote)
                old = (aliases.move(db, model, alias, version, action),)
    except BaseException:
        if final is not None and not _recorded(model, version):
            atomic.discard(final)
        raise
    cat.audit(
        action,
        f"{model}:v{version}",
        manifest_sha256=manifest_sha,
        nbytes=total,
        method=method,
        job=lineage.get("job"),
        checkpoint_step=lineage.get("checkpoint_step"),
        source=lineage.get("source"),
    )
    if alias is not None:
        cat.audit(
            "alias",
            f"{model}@{alias}",
            version=version,
            previous=old[0] if old else None,
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
    adapters: bool = False,
    lineage_extra: dict[str, Any] | None = None,
) -> ModelVersion:
    """``%aios publish JOB [--variant V] [--checkpoint C] --as MODEL [--alias A] [--adapters]``: a job's
    checkpoint (or compressed variant) becomes the next version of MODEL, with lineage back to the job and
    dataset. A LoRA job's adapters are merged into its base version, or kept apart with ``adapters=True``.
    ``lineage_extra``: more lineage to record (a sweep's winner carries ``{"sweep": {...}}``).

    Job data comes through the jobs API (``aios.job(name)``) and variants through ``compress.variant``.

    >>> mv = aios.publish("digits-mlp", variant="int8", as_="digits", alias="production")
    """
    from ..compress import variant as compressed_variant
    from ..data import get as get_dataset

    name = as_ or model
    if not name:
        raise InvalidInput("say which model to publish as: --as MODEL (as_='MODEL' in Python)")
    check_name(name, "model")
    if alias is not None:
        check_alias(alias)
        aliases.check_publish(name, alias)
    j = _job(job)
    cfg = j.config
    meta: dict[str, Any] | None = None
    if variant is not None:
        params, meta = compressed_variant(j.name, variant)
        step, method = int(meta["checkpoint_step"]), meta["method"]
        if checkpoint is not None and j.checkpoint_step(checkpoint) != step:
            raise InvalidInput(
                f"variant {meta['variant']!r} of {j.name!r} was made from step {step}, not from "
                f"--checkpoint {checkpoint}; compress that checkpoint first or drop --checkpoint"
            )
        metrics = _variant_metrics(meta["report"])
    else:
        step = j.checkpoint_step(checkpoint)
        params, method = j.params(step), None
        metrics = _job_metrics(j, step)
    ds = get_dataset(cfg["dataset"], cfg["dataset_version"])
    spec, more = cfg["train"]["model"], {}
    if isinstance(spec, dict) and spec.get("kind") == "lm":
        spec, params, more = _lm_version(j, params, adapters, merged=variant is not None)
    elif adapters:
        raise InvalidInput(f"--adapters publishes the LoRA adapters of a language-model job; {j.name!r} is not one")
    lineage = {
        "dataset": ds.name,
        "dataset_version": ds.version,
        "dataset_hash": ds.hash,
        "job": j.name,
        "checkpoint_step": step,
        "method": method,
        "variant": meta["variant"] if meta else None,
        "provenance": cfg.get("provenance"),  # git commit, notebook, cell hash of what launched the job
        **more,
        **(lineage_extra or {}),
    }
    return publish_params(
        name,
        spec,
        params,
        task=cfg["task"],
        input_shape=tuple(ds.feature_shape),
        n_outputs=cfg["n_outputs"],
        metrics=metrics,
        lineage=lineage,
        alias=alias,
        method=method,
    )


def _check_lm_params(cfg: Any, spec: dict[str, Any], params: Any) -> None:
    """A language model's parameters fit its config: the full tree, or LoRA adapters (``spec["adapters"]``)."""
    if spec.get("adapters"):
        from ..train.lora import check_adapters

        check_adapters(cfg, spec["adapters"], params)
    else:
        from . import lm_artifact

        lm_artifact.check_params(cfg, params)


def _lm_version(job: Any, params: Any, adapters: bool, merged: bool) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """``(spec, params, lineage)`` of a language-model job's checkpoint: LoRA adapters merged into the base
    version (or kept, ``adapters``); a compressed variant (``merged``) is already whole."""
    from ..train import lm_job

    if merged and adapters:
        raise InvalidInput("--adapters publishes a checkpoint's adapters; a compressed variant is already merged")
    return lm_job.publish_parts(job, params, adapters=adapters, merged=merged)


def _job(job: Any) -> Any:
    """A Job handle from a name (through ``aios.job``) or a Job."""
    from ..jobs import job as job_by_name

    if isinstance(job, str):
        return job_by_name(job)
    if not hasattr(job, "checkpoints") or not hasattr(job, "params"):
        raise InvalidInput(f"expected a job name or a Job, not {type(job).__name__}")
    return job


def _variant_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """metrics.json of a variant: its evaluation in the common names, the uncompressed numbers beside them."""
    after, before = report.get("metrics_after"), report.get("metrics_before")
    if not after and report.get("metric_after") is not None:  # a variant made before the common names
        name = mn.ACCURACY if report["metric"] == "token_accuracy" else report["metric"]
        after, before = {name: report["metric_after"]}, {name: report["metric_before"]}
    out: dict[str, Any] = dict(after or {})
    out.update({f"{k}_uncompressed": v for k, v in (before or {}).items()})
    if out:
        out.update(split=report.get("split"), eval=report.get("eval"))
    out.update(
        compression_ratio=round(report.get("ratio", 0.0), 4), max_abs_logit_diff=report.get("max_abs_logit_diff")
    )
    return out


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


def _recorded(model: str, version: int) -> bool:
    return catalog().one("SELECT 1 FROM models WHERE name=? AND version=?", (model, version)) is not None


def _version() -> str:
    from .. import __version__

    return __version__


__all__ = ["publish", "publish_params", "commit", "manifest_bytes", "code_hash", "signature_for", "FORMAT", "FILES"]
