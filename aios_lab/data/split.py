"""Split fractions (``train=0.8,val=0.1,test=0.1``) and a seeded, deterministic row assignment."""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from ..errors import InvalidInput

DEFAULT_SPLIT = {"train": 0.8, "val": 0.1, "test": 0.1}
_SPLIT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def parse(split: str | Mapping[str, float] | None) -> dict[str, float]:
    """``"train=0.8,val=0.2"`` or a dict -> ordered {name: fraction}; fractions must be > 0 and sum to 1."""
    if split is None:
        return dict(DEFAULT_SPLIT)
    if isinstance(split, str):
        pairs: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in split.split(","))):
            name, eq, value = part.partition("=")
            try:
                if not eq:
                    raise ValueError
                pairs[name.strip()] = float(value)
            except ValueError:
                raise InvalidInput(f"bad split {part!r}; write it as train=0.8,val=0.1,test=0.1") from None
        split = pairs
    fractions = dict(split)
    if not fractions:
        raise InvalidInput("empty split; write it as train=0.8,val=0.1,test=0.1")
    for name, frac in fractions.items():
        if not isinstance(name, str) or not _SPLIT_NAME.fullmatch(name):
            raise InvalidInput(f"bad split name {name!r}; use lower-case words like train, val, test")
        if not isinstance(frac, (int, float)) or not 0 < float(frac) <= 1:
            raise InvalidInput(f"split fraction {name}={frac} must be in (0, 1]")
    total = sum(float(f) for f in fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise InvalidInput(f"split fractions sum to {total:g}, not 1; e.g. train=0.8,val=0.1,test=0.1")
    return {k: float(v) for k, v in fractions.items()}


def assign(n: int, fractions: Mapping[str, float], seed: int) -> dict[str, np.ndarray]:
    """Row indices per split: a permutation of ``range(n)`` from ``seed``, cut by the fractions.

    Each split gets ``floor(fraction * n)`` rows and the first split takes the remainder; a split
    that would be empty is an error (too few rows for that many splits).
    """
    counts = {k: int(np.floor(f * n + 1e-9)) for k, f in fractions.items()}
    first = next(iter(counts))
    counts[first] += n - sum(counts.values())
    empty = [k for k, c in counts.items() if c == 0]
    if empty:
        raise InvalidInput(f"split {empty[0]!r} would be empty with {n} rows; use fewer splits or more data")
    order = np.random.default_rng(seed).permutation(n)
    out, start = {}, 0
    for name, count in counts.items():
        out[name] = order[start : start + count]
        start += count
    return out
