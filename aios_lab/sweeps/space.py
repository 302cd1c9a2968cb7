"""The search space of a sweep, from ``--over "lr=1e-4..1e-2:log, batch=64|128|256, width=128|256"``.

Each entry is ``KEY=SPEC``: ``LO..HI`` a range (whole numbers if both ends are, else floats; ``:log`` samples it
on a log scale), ``A|B|C`` a choice, a single value a constant. The result maps each key to an Optuna
distribution; keys that are ``TrainConfig`` fields set training options, the others the model's settings.

>>> parse("lr=1e-4..1e-2:log, width=128|256")["width"].choices
(128, 256)
"""

from __future__ import annotations

import math
import re
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)

from ..errors import InvalidInput

_KEY = re.compile(r"^[a-z_][a-z0-9_]*$")
EXAMPLE = 'e.g. --over "lr=1e-4..1e-2:log, batch=64|128, width=128|256"'


def _value(text: str) -> int | float | str:
    """'128' -> 128, '1e-3' -> 0.001, 'gelu' -> 'gelu'."""
    for cast in (int, float):
        try:
            v = cast(text)
        except ValueError:
            continue
        if isinstance(v, float) and not math.isfinite(v):
            break
        return v
    return text


def _range(key: str, spec: str) -> BaseDistribution:
    body, _, scale = spec.partition(":")
    if scale not in ("", "log"):
        raise InvalidInput(f"--over {key}={spec}: the only range option is :log; {EXAMPLE}")
    lo_text, _, hi_text = body.partition("..")
    lo, hi = _value(lo_text.strip()), _value(hi_text.strip())
    if isinstance(lo, str) or isinstance(hi, str):
        raise InvalidInput(f"--over {key}={spec}: a range is LO..HI of two numbers; {EXAMPLE}")
    if not lo < hi:
        raise InvalidInput(f"--over {key}={spec}: the range's low end must be below its high end")
    log = scale == "log"
    if log and lo <= 0:
        raise InvalidInput(f"--over {key}={spec}: a :log range must be above 0")
    if isinstance(lo, int) and isinstance(hi, int):
        return IntDistribution(lo, hi, log=log)
    return FloatDistribution(float(lo), float(hi), log=log)


def parse(over: str | None) -> dict[str, BaseDistribution]:
    """The search space (key -> Optuna distribution) written in ``over``; one-line InvalidInput otherwise."""
    entries = [e.strip() for e in (over or "").split(",") if e.strip()]
    if not entries:
        raise InvalidInput(f"--over is empty: say what to vary, {EXAMPLE}")
    space: dict[str, BaseDistribution] = {}
    for entry in entries:
        key, sep, spec = (s.strip() for s in entry.partition("="))
        if not sep or not spec or not _KEY.match(key):
            raise InvalidInput(f"--over cannot parse {entry!r}: write KEY=LO..HI[:log] or KEY=A|B|C; {EXAMPLE}")
        if key in space:
            raise InvalidInput(f"--over names {key} twice")
        if ".." in spec:
            space[key] = _range(key, spec)
        else:
            choices = tuple(_value(c.strip()) for c in spec.split("|"))
            if any(c == "" for c in choices):
                raise InvalidInput(f"--over {key}={spec}: an empty choice; write A|B|C")
            if len(set(choices)) != len(choices):
                raise InvalidInput(f"--over {key}={spec}: a choice is listed twice")
            space[key] = CategoricalDistribution(choices)
    return space


def corners(dist: BaseDistribution) -> list[Any]:
    """The values worth checking before a sweep starts: every choice, or both ends of a range."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]


def grid(space: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    """The grid of a space of choices only (for the grid sampler); a range is refused."""
    ranges = [k for k, d in space.items() if not isinstance(d, CategoricalDistribution)]
    if ranges:
        raise InvalidInput(
            f"--sampler grid needs listed values, and {ranges[0]} is a range; write {ranges[0]}=A|B|C "
            "or use --sampler random|tpe"
        )
    return {k: list(d.choices) for k, d in space.items()}


def size(space: dict[str, BaseDistribution]) -> int | None:
    """How many points a space of choices has (None when a range makes it continuous)."""
    n = 1
    for d in space.values():
        if not isinstance(d, CategoricalDistribution):
            return None
        n *= len(d.choices)
    return n


def to_json(space: dict[str, BaseDistribution]) -> dict[str, str]:
    return {k: distribution_to_json(d) for k, d in space.items()}


def from_json(data: dict[str, str]) -> dict[str, BaseDistribution]:
    return {k: json_to_distribution(v) for k, v in data.items()}


def describe(dist: BaseDistribution) -> str:
    """A distribution as the user wrote it: '1e-4..1e-2:log', '64|128'."""
    if isinstance(dist, CategoricalDistribution):
        return "|".join(map(str, dist.choices))
    return f"{dist.low:g}..{dist.high:g}" + (":log" if dist.log else "")


__all__ = ["parse", "corners", "grid", "size", "to_json", "from_json", "describe"]
