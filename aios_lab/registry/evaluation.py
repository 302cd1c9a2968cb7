"""A loaded registry version measured on a dataset split: the evaluation metrics and single-row latency.

Both go through the registry's loader (``LoadedModel.predict`` / ``LoadedLM.predict``), the way a user or
the server calls the model, so what is measured is what is promoted.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .. import metric_names as mn
from ..errors import InvalidInput

EVAL_BYTES = 256 << 20  # rows per predict are chosen so one batch of outputs stays about this size
LATENCY_SAMPLES = 100
WARMUP = 3


def output_row_bytes(loaded: Any, x: Any) -> int:
    """Bytes of one row's float32 outputs, from the signature (an unknown axis, such as a language model's
    positions, takes the data's length)."""
    shape = loaded.signature["outputs"][0]["shape"][1:]
    dims = [int(x.shape[1]) if int(d) < 0 and len(x.shape) > 1 else max(1, int(d)) for d in shape]
    return 4 * max(1, int(np.prod(dims)))


def check_fit(loaded: Any, ds: Any) -> None:
    """Refuse data of another task, or tokenized for another tokenizer, before anything runs."""
    if ds.task != loaded.task:
        raise InvalidInput(f"{ds.ref} is {ds.task} data but {loaded_ref(loaded)} is a {loaded.task} model")
    if getattr(loaded, "tokenizer_sha", None) is not None:
        from ..data import check_tokenizer

        check_tokenizer(ds, loaded)


def loaded_ref(loaded: Any) -> str:
    return f"{loaded.name}:v{loaded.version}"


def evaluate(loaded: Any, ds: Any, split: str, batch: int = 256) -> dict[str, float]:
    """The metrics of ``metric_names.eval_metrics(task)`` of ``loaded`` on ``ds``'s ``split``, read batch by batch.

    Classification and regression count as the trainer does (``compress.evaluate.scores``); a language
    model's loss and accuracy are over the learned tokens (the dataset's ``mask`` where it has one)."""
    from ..compress.evaluate import scores

    x_arr, y_arr = ds.arrays(split)
    extra = ds.extra_arrays(split)
    task = loaded.task
    n = int(x_arr.shape[0])
    if n == 0:
        raise InvalidInput(f"{ds.ref} split {split!r} is empty; evaluate on a split with rows")
    rows = int(max(1, min(batch, EVAL_BYTES // output_row_bytes(loaded, x_arr))))
    sums: dict[str, float] = {}
    count = 0.0
    for start in range(0, n, rows):
        x, y = x_arr[start : start + rows], y_arr[start : start + rows]
        if task == "lm":
            mask = extra["mask"][start : start + rows] if "mask" in extra else None
            segments = extra["segments"][start : start + rows] if "segments" in extra else None
            out = _predict(loaded, x, segments)
            part, weight = _lm_scores(out, y, mask)
        else:
            out = _predict(loaded, x, None)
            part, weight = scores(task, out, y), float(len(x))
        for k, v in part.items():
            sums[k] = sums.get(k, 0.0) + v * weight
        count += weight
    if count == 0:
        raise InvalidInput(f"{ds.ref} split {split!r} has no learned tokens to evaluate on")
    metrics = {k: v / count for k, v in sums.items()}
    if task == "lm":
        metrics[mn.PERPLEXITY] = mn.perplexity(metrics[mn.LOSS])
    return {k: metrics[k] for k in mn.eval_metrics(task) if k in metrics}


def _predict(loaded: Any, x: np.ndarray, segments: np.ndarray | None) -> np.ndarray:
    if segments is not None and hasattr(loaded, "tokenizer_sha"):
        return np.asarray(loaded.predict(x, segment_ids=segments))
    return np.asarray(loaded.predict(x))


def _lm_scores(logits: np.ndarray, y: np.ndarray, mask: np.ndarray | None) -> tuple[dict[str, float], float]:
    """Mean next-token loss and accuracy over the positions ``mask`` keeps (all without one), and their count."""
    logits = logits.astype(np.float32, copy=False)
    top = logits.max(axis=-1, keepdims=True)
    logz = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
    picked = np.take_along_axis(logits, y[..., None].astype(np.int64), axis=-1)[..., 0]
    nll = logz - picked
    right = (logits.argmax(axis=-1) == y).astype(np.float64)
    w = np.ones_like(nll, dtype=np.float64) if mask is None else np.asarray(mask, np.float64)
    total = float(w.sum())
    if total == 0:
        return {}, 0.0
    return {mn.LOSS: float((nll * w).sum() / total), mn.ACCURACY: float((right * w).sum() / total)}, total


def latency(loaded: Any, x: np.ndarray, samples: int = LATENCY_SAMPLES) -> dict[str, float]:
    """p50, p99 and mean milliseconds of one single-row ``predict`` (host array in, host array out), over
    ``samples`` calls cycling through the rows of ``x``, after a few warm-up calls (compilation)."""
    if len(x) == 0:
        raise InvalidInput("no rows to time the model on")
    for i in range(WARMUP):
        loaded.predict(x[i % len(x)][None])
    times = []
    for i in range(samples):
        row = x[i % len(x)][None]
        t0 = time.perf_counter()
        loaded.predict(row)
        times.append((time.perf_counter() - t0) * 1e3)
    ms = np.asarray(times)
    return {
        "latency_p50_ms": float(np.percentile(ms, 50)),
        "latency_p99_ms": float(np.percentile(ms, 99)),
        "latency_mean_ms": float(ms.mean()),
    }


__all__ = ["evaluate", "latency", "check_fit", "LATENCY_SAMPLES"]
