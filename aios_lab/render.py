"""Tables that render as HTML in a notebook and as aligned text in a terminal."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


class Text(str):
    """Plain text that a notebook shows as text (not as a quoted string) and a terminal prints."""

    def _repr_pretty_(self, p, cycle):
        p.text(str(self))


@dataclass
class Table:
    """Rows of values under named columns; empty tables say so instead of drawing nothing."""

    columns: Sequence[str]
    rows: list[Sequence[Any]] = field(default_factory=list)
    title: str | None = None
    empty: str = "nothing yet"

    def _cells(self) -> list[list[str]]:
        return [[fmt(v) for v in row] for row in self.rows]

    def __str__(self) -> str:
        if not self.rows:
            return f"{self.title + ': ' if self.title else ''}{self.empty}"
        cells = self._cells()
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(self.columns)]
        line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()
        out = [self.title] if self.title else []
        out += [line(self.columns), line("-" * w for w in widths)] + [line(r) for r in cells]
        return "\n".join(out)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        caption = f"<caption style='text-align:left'><b>{html.escape(self.title)}</b></caption>" if self.title else ""
        if not self.rows:
            return f"<div class='aios-table'>{caption}<i>{html.escape(self.empty)}</i></div>"
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self._cells())
        return f"<table class='aios-table'>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]


def fmt(value: Any) -> str:
    """A compact human form of a cell value."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def nbytes(n: int | float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def age(t: float | None) -> str:
    """Seconds since ``t`` as '5s', '3m', '2h', '4d'."""
    if not t:
        return "-"
    s = max(0.0, time.time() - t)
    for limit, unit, div in ((60, "s", 1), (3600, "m", 60), (86400, "h", 3600)):
        if s < limit:
            return f"{int(s / div)}{unit}"
    return f"{int(s / 86400)}d"
