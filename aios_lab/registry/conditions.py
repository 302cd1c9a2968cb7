"""Release conditions: ``--require "accuracy>=0.95,latency_p99_ms<=5"`` parsed, checked against known metric
names before anything runs, and judged against measured values.

Names are the evaluation metrics (``aios_lab.metric_names``: loss, accuracy, perplexity, mse), the latency
measured through the registry's loader (``latency_p50_ms``, ``latency_p99_ms``, ``latency_mean_ms``), and
any name a serving component registers with :func:`register_metric` (e.g. ``canary_error_rate``).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import metric_names as mn
from ..errors import InvalidInput

LATENCY = ("latency_p50_ms", "latency_p99_ms", "latency_mean_ms")
DATA_METRICS = (mn.LOSS, mn.ACCURACY, mn.PERPLEXITY, mn.MSE)
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}
_COND = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*(>=|<=|==|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")

# name -> fn(model, version) -> value or None: metrics that come from elsewhere than an evaluation run,
# such as per-version serving numbers (a canary's error rate). Registered by their owner at import.
PROVIDERS: dict[str, Callable[[str, int], float | None]] = {}


def register_metric(name: str, fn: Callable[[str, int], float | None]) -> None:
    """Let ``--require`` name ``name``; ``fn(model, version)`` gives its value (None: not measured yet)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in (*DATA_METRICS, *LATENCY):
        raise ValueError(f"cannot register metric {name!r}")
    PROVIDERS[name] = fn


def known() -> tuple[str, ...]:
    return (*DATA_METRICS, *LATENCY, *sorted(PROVIDERS))


@dataclass(frozen=True)
class Condition:
    """``metric OP threshold``, e.g. accuracy >= 0.95."""

    metric: str
    op: str
    threshold: float

    def holds(self, value: float | None) -> bool:
        return value is not None and math.isfinite(value) and OPS[self.op](value, self.threshold)

    @property
    def needs_data(self) -> bool:
        return self.metric in DATA_METRICS or self.metric in LATENCY

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


def parse(require: str | None) -> list[Condition]:
    """``"accuracy>=0.95,latency_p99_ms<=5"`` -> conditions; a part that does not parse, or names no known
    metric, is a one-line InvalidInput."""
    if require is None:
        return []
    if not isinstance(require, str) or not require.strip():
        raise InvalidInput('--require is empty; write conditions like "accuracy>=0.95,latency_p99_ms<=5"')
    out = []
    for part in require.split(","):
        m = _COND.fullmatch(part)
        if m is None:
            raise InvalidInput(
                f"--require {part.strip()!r} does not parse; write METRIC OP NUMBER with OP one of "
                f'{" ".join(OPS)}, e.g. "accuracy>=0.95,latency_p99_ms<=5"'
            )
        name, op, number = m.groups()
        if name not in known():
            raise InvalidInput(f"--require names {name!r}, which is no metric; use one of {', '.join(known())}")
        threshold = float(number)
        if not math.isfinite(threshold):
            raise InvalidInput(f"--require {part.strip()!r}: the threshold must be a finite number")
        out.append(Condition(name, op, threshold))
    return out


def check_task(conditions: list[Condition], task: str) -> None:
    """Refuse a data metric that models of ``task`` do not report (mse of a classifier, accuracy of a regressor)."""
    have = mn.eval_metrics(task)
    for c in conditions:
        if c.metric in DATA_METRICS and c.metric not in have:
            raise InvalidInput(
                f"--require names {c.metric!r}, which a {task} model does not report; it reports {', '.join(have)}"
            )


def judge(conditions: list[Condition], values: dict[str, Any]) -> list[dict[str, Any]]:
    """Each condition with the value measured and whether it holds."""
    return [
        {"condition": str(c), "metric": c.metric, "value": values.get(c.metric), "ok": c.holds(values.get(c.metric))}
        for c in conditions
    ]


def _serving(attr: str) -> Callable[[str, int], float | None]:
    """A canary number read from the endpoints' published status (serving is imported only when it is read)."""

    def read(model: str, version: int) -> float | None:
        import importlib

        return getattr(importlib.import_module("aios_lab.serve.canary"), attr)(model, version)

    return read


register_metric("canary_error_rate", _serving("error_rate"))  # errors / requests of the candidate as a canary
register_metric("canary_requests", _serving("requests_served"))  # requests it answered as a canary

__all__ = ["Condition", "parse", "judge", "check_task", "known", "register_metric", "PROVIDERS", "LATENCY"]
