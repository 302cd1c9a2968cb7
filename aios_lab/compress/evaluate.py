"""Side-by-side evaluation of a model and its compressed variant: bytes, metric, logits, forward time."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import jax
import numpy as np

from ..render import Table, nbytes as fmt_bytes
from .qmodel import QForward
from .quant import parse_method


def metric_name(task: str) -> str:
    return {"classification": "accuracy", "lm": "token_accuracy"}.get(task, "mse")


def score(task: str, out: np.ndarray, y: np.ndarray) -> float:
    """accuracy (classification), next-token accuracy (lm) or mean squared error (regression)."""
    if task in ("classification", "lm"):
        return float(np.mean(np.argmax(out, axis=-1) == np.asarray(y).reshape(out.shape[:-1])))
    return float(np.mean((out.reshape(len(out), -1) - np.asarray(y, np.float64).reshape(len(out), -1)) ** 2))


def time_pair(fwds: list[QForward], xb: np.ndarray, repeats: int = 30, min_time: float = 0.2) -> list[float]:
    """Median seconds per forward of each of ``fwds`` on ``xb``, timed in alternation so that a busy machine
    slows them alike (warm-up first; at least ``repeats`` rounds and ``min_time`` seconds)."""
    xd = jax.device_put(xb)
    for f in fwds:
        jax.block_until_ready(f.device(xd))
    times: list[list[float]] = [[] for _ in fwds]
    start = time.perf_counter()
    while len(times[0]) < repeats or (time.perf_counter() - start < min_time and len(times[0]) < 10 * repeats):
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
    metric_before: float | None = None
    metric_after: float | None = None
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
        pts = self.metric in ("accuracy", "token_accuracy")
        delta = self.delta
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
        if self.metric_before is not None:
            rows.append(
                [
                    self.metric,
                    f"{self.metric_before:.4f}",
                    f"{self.metric_after:.4f}",
                    f"{100 * delta:+.2f} pts" if pts else f"{delta:+.4g}",
                ]
            )
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
        metric=metric_name(task),
        bytes_before=info["bytes_before"],
        bytes_after=info["bytes_after"],
        weight_bytes_before=info["weight_bytes_before"],
        weight_bytes_after=info["weight_bytes_after"],
        kept_float=list(info.get("kept_float", [])),
        eval=eval_name,
    )
    if x is None or len(x) == 0:
        return rep
    ref, var = QForward(apply, params), QForward(apply, qparams)
    sums, count, diff = [0.0, 0.0], 0, 0.0
    for i in range(0, len(x), batch):  # batch by batch: an lm's logits for a whole split would not fit
        xb_, yb = x[i : i + batch], y[i : i + batch]
        a, b = ref(xb_), var(xb_)
        n = int(np.prod(a.shape[:-1])) if task in ("classification", "lm") else len(a)
        sums[0] += score(task, a, yb) * n
        sums[1] += score(task, b, yb) * n
        count += n
        diff = max(diff, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
    rep.metric_before, rep.metric_after = sums[0] / count, sums[1] / count
    rep.max_abs_logit_diff = diff
    xb = x[:batch]
    if len(xb) < batch:  # time a full batch even on a small split
        xb = np.concatenate([xb] * (-(-batch // len(xb))))[:batch]
    rep.batch = batch
    rep.forward_s_before, rep.forward_s_after = time_pair([ref, var], xb, repeats)
    return rep


__all__ = ["Report", "evaluate", "score", "metric_name", "time_pair"]
