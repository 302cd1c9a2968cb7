"""Side-by-side evaluation of a model and its compressed variant: bytes, metric, logits, forward time."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import jax
import numpy as np

from .. import metric_names as mn
from ..render import Table, nbytes as fmt_bytes
from .qmodel import QForward
from .quant import parse_method


def scores(task: str, out: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The evaluation metrics of ``task`` (``metric_names.eval_metrics``) over one batch, as the trainer counts
    them: loss and accuracy (classification, next-token lm over the learned tokens) or loss and mse."""
    return from_sums(task, sums(task, out, y), perplexity=False)


def sums(task: str, out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``[loss sum, correct, count]`` over one batch (count: examples, or a language model's learned tokens)."""
    return np.asarray([np.sum(np.asarray(a, np.float64)) for a in _token_sums_jit()(task, out, y)])


def from_sums(task: str, totals: np.ndarray, perplexity: bool = True) -> dict[str, float]:
    """The metrics of ``task`` from added-up :func:`sums` (perplexity too for a language model)."""
    loss = float(totals[0] / max(totals[2], 1))
    out = {mn.LOSS: loss}
    if task == "regression":
        out[mn.MSE] = loss
    else:
        out[mn.ACCURACY] = float(totals[1] / max(totals[2], 1))
    if task == "lm" and perplexity:
        out[mn.PERPLEXITY] = mn.perplexity(loss)
    return out


@functools.cache
def _token_sums_jit() -> Callable:
    from ..train.step import token_sums  # the trainer's own definition of loss and correctness

    return jax.jit(token_sums, static_argnums=0)


def time_pair(
    fwds: list[QForward], xb: np.ndarray, repeats: int = 30, min_time: float = 0.2, max_time: float = 3.0
) -> list[float]:
    """Median seconds per forward of each of ``fwds`` on ``xb``, timed in alternation so that a busy machine
    slows them alike (warm-up first; ``repeats`` rounds and at least ``min_time`` seconds, but no more rounds
    than fit in ``max_time`` once 3 are done: a language model's forward can take seconds on a CPU)."""
    xd = jax.device_put(xb)
    for f in fwds:
        jax.block_until_ready(f.device(xd))
    times: list[list[float]] = [[] for _ in fwds]
    start = time.perf_counter()
    while True:
        n, spent = len(times[0]), time.perf_counter() - start
        if not ((n < repeats and (n < 3 or spent < max_time)) or (spent < min_time and n < 10 * repeats)):
            break
        for f, ts in zip(fwds, times):
            t0 = time.perf_counter()
            jax.block_until_ready(f.device(xd))
            ts.append(time.perf_counter() - t0)
    return [float(np.median(ts)) for ts in times]


@dataclass
class Report:
    """What compressing one checkpoint did: sizes, the metric, the largest logit change, and speed."""

    method: str
    variant: str
    task: str
    metric: str
    bytes_before: int
    bytes_after: int
    weight_bytes_before: int
    weight_bytes_after: int
    metric_before: float | None = None  # the headline metric (``metric``) of the original and the variant
    metric_after: float | None = None
    metrics_before: dict[str, float] = field(default_factory=dict)  # every metric of ``eval_metrics(task)``
    metrics_after: dict[str, float] = field(default_factory=dict)
    split: str | None = None  # the split evaluated on, e.g. "val"
    max_abs_logit_diff: float | None = None
    forward_s_before: float | None = None
    forward_s_after: float | None = None
    batch: int | None = None
    eval: str | None = None  # what was evaluated, e.g. "digits@1:test (180 rows)"
    kept_float: list[dict[str, str]] = field(default_factory=list)
    job: str | None = None
    checkpoint_step: int | None = None
    path: str | None = None
    created: float = field(default_factory=time.time)

    @property
    def ratio(self) -> float:
        return self.bytes_before / max(1, self.bytes_after)

    @property
    def weight_ratio(self) -> float:
        return self.weight_bytes_before / max(1, self.weight_bytes_after)

    @property
    def delta(self) -> float | None:
        if self.metric_before is None or self.metric_after is None:
            return None
        return self.metric_after - self.metric_before

    @property
    def speed(self) -> float | None:
        """Forward time of the variant relative to the original (2.0 = twice as slow)."""
        if not self.forward_s_before or self.forward_s_after is None:
            return None
        return self.forward_s_after / self.forward_s_before

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(ratio=self.ratio, weight_ratio=self.weight_ratio, delta=self.delta, speed=self.speed)
        return d

    def table(self) -> Table:
        rows: list[list[Any]] = [
            [
                "bytes (all parameters)",
                fmt_bytes(self.bytes_before),
                fmt_bytes(self.bytes_after),
                f"{self.ratio:.2f}x smaller",
            ],
            [
                "bytes (weight tensors)",
                fmt_bytes(self.weight_bytes_before),
                fmt_bytes(self.weight_bytes_after),
                f"{self.weight_ratio:.2f}x smaller",
            ],
        ]
        for name in (self.metric, *(k for k in self.metrics_after if k != self.metric)):
            before, after = self.metrics_before.get(name), self.metrics_after.get(name)
            if before is None or after is None:
                continue
            change = f"{100 * (after - before):+.2f} pts" if name == mn.ACCURACY else f"{after - before:+.4g}"
            rows.append([mn.LABELS.get(name, name), f"{before:.4f}", f"{after:.4f}", change])
        if self.max_abs_logit_diff is not None:
            rows.append(["max |logit difference|", "-", f"{self.max_abs_logit_diff:.4g}", ""])
        if self.forward_s_before is not None:
            rows.append(
                [
                    f"forward per batch of {self.batch}",
                    f"{1e3 * self.forward_s_before:.3f} ms",
                    f"{1e3 * self.forward_s_after:.3f} ms",
                    f"{self.speed:.2f}x the time",
                ]
            )
        for k in self.kept_float:
            rows.append(["kept in float", k["path"], "", k["reason"]])
        where = f" of {self.job}@{self.checkpoint_step}" if self.job else ""
        title = f"{self.method}{where}" + (f" on {self.eval}" if self.eval else "")
        return Table(["", "original", self.variant, "change"], rows, title=title)

    def __str__(self) -> str:
        return str(self.table())

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()


def evaluate(
    apply: Callable[[Any, Any], Any],
    params: Any,
    qparams: Any,
    info: dict[str, Any],
    task: str,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    *,
    batch: int = 256,
    repeats: int = 30,
    eval_name: str | None = None,
    split: str | None = None,
) -> Report:
    """Compare ``params`` with ``qparams`` (from ``compress_params``; ``info`` its second result) on ``(x, y)``.

    Without data only the sizes are reported. Forward time is the median over ``repeats`` jitted calls on
    one batch of ``batch`` rows (the variant dequantises inside its jit, as it would when served).
    """
    m = parse_method(info["method"])
    rep = Report(
        method=m.name,
        variant=m.variant,
        task=task,
        metric=mn.quality(task),
        bytes_before=info["bytes_before"],
        bytes_after=info["bytes_after"],
        weight_bytes_before=info["weight_bytes_before"],
        weight_bytes_after=info["weight_bytes_after"],
        kept_float=list(info.get("kept_float", [])),
        eval=eval_name,
        split=split,
    )
    if x is None or len(x) == 0:
        return rep
    ref, var = QForward(apply, params), QForward(apply, qparams)
    totals = [np.zeros(3), np.zeros(3)]
    diff = 0.0
    for i in range(0, len(x), batch):  # batch by batch: an lm's logits for a whole split would not fit
        xb_, yb = x[i : i + batch], y[i : i + batch]
        a, b = ref(xb_), var(xb_)
        for total, out in zip(totals, (a, b)):
            total += sums(task, out, yb)
        diff = max(diff, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
    rep.metrics_before, rep.metrics_after = (from_sums(task, t) for t in totals)
    rep.metric_before, rep.metric_after = rep.metrics_before[rep.metric], rep.metrics_after[rep.metric]
    rep.max_abs_logit_diff = diff
    xb = x[:batch]
    if len(xb) < batch:  # time a full batch even on a small split
        xb = np.concatenate([xb] * (-(-batch // len(xb))))[:batch]
    rep.batch = batch
    rep.forward_s_before, rep.forward_s_after = time_pair([ref, var], xb, repeats)
    return rep


__all__ = ["Report", "evaluate", "scores", "sums", "from_sums", "time_pair"]
