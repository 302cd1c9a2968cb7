"""Small inline SVG charts (loss and accuracy curves, sparklines) with no plotting library."""

from __future__ import annotations

import html
from collections.abc import Sequence

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")


def curves_svg(
    series: dict[str, Sequence[tuple[float, float]]], width: int = 420, height: int = 160, title: str = ""
) -> str:
    """Line chart of named (x, y) series sharing one x axis; each series scaled to its own range."""
    pad, right = 34, 8
    pts = [p for s in series.values() for p in s]
    if not pts:
        return f"<svg width='{width}' height='{height}'><text x='8' y='20' fill='gray'>no points yet</text></svg>"
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    x1 = x1 if x1 > x0 else x0 + 1
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-size='10' "
        f"font-family='sans-serif'><rect width='100%' height='100%' fill='none'/>",
        f"<text x='{pad}' y='11'>{html.escape(title)}</text>",
    ]
    plot_h = height - 30
    for i, (name, s) in enumerate(series.items()):
        if not s:
            continue
        y0, y1 = min(p[1] for p in s), max(p[1] for p in s)
        y1 = y1 if y1 > y0 else y0 + 1e-9
        xy = " ".join(
            f"{pad + (x - x0) / (x1 - x0) * (width - pad - right):.1f},{16 + (1 - (y - y0) / (y1 - y0)) * plot_h:.1f}"
            for x, y in s
        )
        color = COLORS[i % len(COLORS)]
        parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='1.5' points='{xy}'/>")
        parts.append(
            f"<text x='{pad + 110 * i}' y='{height - 2}' fill='{color}'>{html.escape(name)} "
            f"{s[-1][1]:.4g} ({y0:.3g}..{y1:.3g})</text>"
        )
    parts.append(
        f"<text x='2' y='{16 + plot_h}' fill='gray'>{x0:g}</text>"
        f"<text x='{width - right - 30}' y='{16 + plot_h}' fill='gray'>{x1:g}</text></svg>"
    )
    return "".join(parts)
