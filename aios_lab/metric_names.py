"""One vocabulary of metric names for every part: trainer rows, evaluation, compression reports,
the registry's ``metrics.json``, the widget, the CLI and the sidebar all use these keys.

A metrics row is ``{"step", "time", "loss", ...}``; an evaluation row also carries ``"split"``
(``"val"``, ``"test"``). The same key means the same thing everywhere: ``accuracy`` is the fraction
of right answers for classification and of right next tokens (where the loss counts) for language
models; ``perplexity`` is ``exp(loss)`` for language models.
"""

from __future__ import annotations

import math

STEP = "step"
TIME = "time"
SPLIT = "split"
LOSS = "loss"
ACCURACY = "accuracy"
PERPLEXITY = "perplexity"
MSE = "mse"
EXAMPLES_PER_S = "examples_per_s"
STEP_TIME = "step_time"
INPUT_WAIT = "input_wait"  # fraction of the step time spent waiting for the next batch

HIGHER_IS_BETTER = {ACCURACY: True, LOSS: False, PERPLEXITY: False, MSE: False}
LABELS = {
    LOSS: "loss",
    ACCURACY: "accuracy",
    PERPLEXITY: "perplexity",
    MSE: "mse",
    EXAMPLES_PER_S: "examples/s",
    STEP_TIME: "step time",
    INPUT_WAIT: "input wait",
}


def quality(task: str | None) -> str:
    """The metric that says how good a model is for ``task``: accuracy, or mse for regression."""
    return MSE if task == "regression" else ACCURACY


def eval_metrics(task: str | None) -> tuple[str, ...]:
    """The metrics an evaluation of ``task`` reports, in display order."""
    if task == "lm":
        return (LOSS, ACCURACY, PERPLEXITY)
    if task == "regression":
        return (LOSS, MSE)
    return (LOSS, ACCURACY)


def perplexity(loss: float | None) -> float | None:
    """``exp(loss)``, capped so a diverged model reads as inf rather than overflowing."""
    if loss is None or not math.isfinite(loss):
        return None
    return math.exp(loss) if loss < 700 else float("inf")


def better(name: str, a: float, b: float) -> bool:
    """True when value ``a`` of metric ``name`` is better than ``b``."""
    return a > b if HIGHER_IS_BETTER.get(name, False) else a < b


__all__ = [
    "STEP",
    "TIME",
    "SPLIT",
    "LOSS",
    "ACCURACY",
    "PERPLEXITY",
    "MSE",
    "EXAMPLES_PER_S",
    "STEP_TIME",
    "INPUT_WAIT",
    "HIGHER_IS_BETTER",
    "LABELS",
    "quality",
    "eval_metrics",
    "perplexity",
    "better",
]
