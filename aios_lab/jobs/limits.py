"""The bounds of the numbers a job takes beside its training config (priority, retries, what a reader asks
for): each reaches SQLite's 64-bit integers, so anything outside is refused with one line before it is used.
The training numbers (steps, batch, lr, ...) are bounded where they are defined, in ``train.config``.

``check("priority", 1e20)`` raises ``InvalidInput("--priority must be a whole number from -1,000,000 to
1,000,000, not 1e+20")``; whole numbers given as floats or text (``1e4`` from JSON or a flag) come back as ints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from ..errors import InvalidInput


@dataclass(frozen=True)
class Bound:
    lo: float
    hi: float
    whole: bool = True  # an integer; else a finite float
    above_lo: bool = False  # strictly greater than ``lo``


BOUNDS: dict[str, Bound] = {
    "priority": Bound(-1_000_000, 1_000_000),
    "max_retries": Bound(0, 100),
    "since_step": Bound(-1, 2**62),
    "tail": Bound(0, 1_000_000),
    "eval_batch": Bound(1, 1 << 24),
    "hosts": Bound(1, 4096),
    "devices_per_host": Bound(1, 4096),
}


def flag(name: str) -> str:
    """``checkpoint_every`` -> ``--checkpoint-every`` (errors name the flag users type)."""
    return "--" + name.replace("_", "-")


def check(name: str, value: Any, bound: Bound | None = None) -> int | float:
    """``value`` if it is a number within ``BOUNDS[name]`` (or ``bound``; an int for whole numbers), else
    InvalidInput. Strings (a flag's text) are read as numbers first.
    """
    b = bound or BOUNDS[name]
    kind = "a whole number" if b.whole else "a number"
    span = f"above {show(b.lo)} up to {show(b.hi)}" if b.above_lo else f"from {show(b.lo)} to {show(b.hi)}"
    number = _number(value)
    if number is not None and b.whole and isinstance(number, float):
        number = int(number) if number.is_integer() else None
    if number is None or not (number > b.lo if b.above_lo else number >= b.lo) or number > b.hi:
        raise InvalidInput(f"{flag(name)} must be {kind} {span}, not {show(value)}")
    return number if b.whole else float(number)


def _number(value: Any) -> int | float | None:
    """An int or a finite float from a number or its text; None for anything else (bools included)."""
    if isinstance(value, str):
        for read in (int, float):
            try:
                return _number(read(value.strip()))
            except (ValueError, OverflowError):
                continue
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    if isinstance(value, Integral):
        return int(value)
    number = float(value)
    return number if math.isfinite(number) else None


def show(x: Any) -> str:
    """A number as people write it: 1,000,000 or 1e+20 (anything else as its repr)."""
    if isinstance(x, bool) or not isinstance(x, Real):
        return repr(x)
    if abs(x) < 1e15 and (isinstance(x, Integral) or float(x).is_integer()):
        return f"{int(x):,}"
    try:
        return f"{float(x):.6g}"
    except OverflowError:
        return f"a {len(str(abs(int(x))))}-digit number"


def number(value: Any) -> int | float | Any:
    """A flag's text read as a number (``"8"`` -> 8, ``"1e4"`` -> 10000.0); anything else as given."""
    found = _number(value) if isinstance(value, str) else None
    return value if found is None else found


__all__ = ["BOUNDS", "Bound", "check", "flag", "number", "show"]
