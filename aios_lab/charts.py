"""Training curves as inline SVG: the one drawing of a job's charts, shown by the notebook widget and, through
``GET /aios/api/jobs/NAME/charts``, by the sidebar's job panel.

Pure functions, numbers in and markup out, no plotting library. Each chart has its own y axis with round tick
labels (a log axis for a loss that spans decades), and an HTML legend that wraps instead of overlapping. Text
takes the page's colour (``currentColor``), so light and dark themes both read. The markup is well-formed XML.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from . import metric_names as M

Point = tuple[float, float]

WIDTH, HEIGHT = 380, 190
FONT = 11  # px, tick labels
CHAR = 0.62 * FONT  # a generous width per character of a tick label, to size the margins
MAX_POINTS = 400  # per series; longer ones are thinned evenly (the last point is kept)
LOG_RATIO = 20.0  # a positive series whose max/min reaches this is drawn on a log axis ("auto")
SPLIT_COLORS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}
OTHER_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf")
CHARTED = (M.ACCURACY, M.MSE)  # metrics that get a chart of their own beside the loss
BOX_STYLE = "display:flex;flex-wrap:wrap;gap:8px 24px;font-size:12px;line-height:1.4"


class Series(NamedTuple):
    """One line of a chart: its legend label, its (x, y) points in x order and its stroke colour."""

    label: str
    points: Sequence[Point]
    color: str


# ---- numbers --------------------------------------------------------------------------------------------------


def fmt(v: float) -> str:
    """A value in at most 4 significant digits: ``0.1235``, ``2.5``, ``1.2e-5``, ``3.4e6``."""
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e4:
        return f"{v:.4g}"
    mantissa, exp = f"{v:.3e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"


def fmt_count(v: float) -> str:
    """A count (a step, examples per second) in a few characters: ``950``, ``1.5k``, ``200k``, ``2.1M``."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}" if v != int(v) else str(int(v))


def _clean(v: float) -> float:
    return float(f"{v:.12g}")


def nice_ticks(lo: float, hi: float, count: int = 5) -> tuple[float, list[float]]:
    """About ``count`` round ticks (1, 2 or 5 times a power of ten apart) inside ``[lo, hi]``, and their step."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return 0.0, []
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9)
    out = []
    k = first
    while k * step <= hi + step * 1e-9:
        out.append(_clean(k * step))
        k += 1
    return step, out


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten inside ``[lo, hi]`` (both > 0), with 2x and 5x between them when there are few decades."""
    if not (0 < lo < hi) or not math.isfinite(hi):
        return []
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    decades = [10.0**k for k in range(first, last + 1)]

    def inside(v: float) -> bool:
        return lo <= v * (1 + 1e-9) and v <= hi * (1 + 1e-9)

    out = [d for d in decades if inside(d)]
    if len(out) < 3:
        out = [v for v in (_clean(m * d) for d in decades for m in (1, 2, 5)) if inside(v)]
    return out


def thin(points: Sequence[Any], n: int = MAX_POINTS) -> list[Any]:
    """At most ``n`` evenly spaced items of ``points``, always keeping the first and the last."""
    if len(points) <= n:
        return list(points)
    stride = (len(points) - 1) / (n - 1)
    return [points[round(i * stride)] for i in range(n)]


# ---- one chart ------------------------------------------------------------------------------------------------


def _use_log(values: list[float], log_y: bool | str) -> bool:
    if log_y == "auto":
        return bool(values) and min(values) > 0 and max(values) / min(values) >= LOG_RATIO
    return bool(log_y) and bool(values) and min(values) > 0


def _y_axis(values: list[float], log: bool) -> tuple[float, float, list[float]]:
    """The y domain (in drawn units: log10 of the value on a log axis) and the tick values."""
    lo, hi = min(values), max(values)
    if log:
        a, b = math.log10(lo), math.log10(hi)
        pad = (b - a) * 0.04
        return a - pad, b + pad, log_ticks(lo, hi)
    if hi == lo:
        d = abs(lo) * 0.1 or 1.0
        lo, hi = lo - d, hi + d
    step, _ = nice_ticks(lo, hi, 5)
    lo2, hi2 = _clean(math.floor(lo / step + 1e-9) * step), _clean(math.ceil(hi / step - 1e-9) * step)
    _, ticks = nice_ticks(lo2, hi2, 5)
    return lo2, hi2, ticks


def _empty(title: str, key: str, width: int, height: int) -> str:
    return (
        f"<figure class='aios-chart aios-chart-empty' data-chart='{html.escape(key)}' "
        f"style='margin:0;flex:0 1 {width}px;min-width:0'>"
        f"<figcaption style='margin:0 0 2px 0'><span class='aios-chart-title' style='font-weight:600'>"
        f"{html.escape(title)}</span></figcaption>"
        f"<svg xmlns='http://www.w3.org/2000/svg' class='aios-chart-svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' style='max-width:100%;height:auto'>"
        f"<text x='{width / 2:g}' y='{height / 2:g}' text-anchor='middle' fill='currentColor' fill-opacity='0.6' "
        f"font-size='{FONT}'>no points yet</text></svg></figure>"
    )


def line_chart(
    title: str,
    series: Sequence[Series],
    *,
    key: str | None = None,
    log_y: bool | str = "auto",
    width: int = WIDTH,
    height: int = HEIGHT,
    x_label: str = "step",
) -> str:
    """A ``<figure>`` with a title, a legend (label and last value of each series) and an SVG line chart whose
    y axis is this chart's own. ``log_y``: True, False or "auto" (log when the values span decades)."""
    key = key or title.lower()
    shown = []
    for s in series:
        pts = [(float(x), float(y)) for x, y in s.points if math.isfinite(x) and math.isfinite(y)]
        shown.append(Series(s.label, thin(pts), s.color))
    values = [y for s in shown for _, y in s.points]
    log = _use_log(values, log_y)
    if log:
        shown = [Series(s.label, [(x, y) for x, y in s.points if y > 0], s.color) for s in shown]
        values = [y for y in values if y > 0]
    shown = [s for s in shown if s.points]
    if not shown:
        return _empty(title, key, width, height)
    y0, y1, yticks = _y_axis(values, log)
    xs = [x for s in shown for x, _ in s.points]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    _, xticks = nice_ticks(x0, x1, 5)
    ylabels = [fmt(t) for t in yticks]
    xlabels = [fmt_count(t) for t in xticks]
    left = round(max((len(t) for t in ylabels), default=1) * CHAR + 10)
    right = round(max(10.0, (len(xlabels[-1]) if xlabels else 1) * CHAR / 2 + 4))
    top, bottom = 8, FONT + 10
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        v = math.log10(y) if log else y
        return top + (1 - (v - y0) / (y1 - y0)) * ph

    out = [
        f"<figure class='aios-chart' data-chart='{html.escape(key)}' data-scale='{'log' if log else 'linear'}' "
        f"style='margin:0;flex:0 1 {width}px;min-width:0'>",
        "<figcaption style='display:flex;flex-wrap:wrap;align-items:center;gap:2px 12px;margin:0 0 2px 0'>",
        f"<span class='aios-chart-title' style='font-weight:600;white-space:nowrap'>{html.escape(title)}"
        + (" <span style='font-weight:normal;opacity:0.7'>(log scale)</span>" if log else "")
        + "</span>",
    ]
    for s in shown:
        out.append(
            f"<span class='aios-legend-item' data-series='{html.escape(s.label)}' "
            "style='display:inline-flex;align-items:center;gap:4px;white-space:nowrap'>"
            f"<svg width='14' height='4' aria-hidden='true'><line x1='0' y1='2' x2='14' y2='2' "
            f"stroke='{s.color}' stroke-width='2'/></svg>{html.escape(s.label)} {fmt(s.points[-1][1])}</span>"
        )
    out.append("</figcaption>")
    out.append(
        f"<svg xmlns='http://www.w3.org/2000/svg' class='aios-chart-svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' style='max-width:100%;height:auto' font-size='{FONT}' "
        f"role='img' aria-label='{html.escape(title)}'>"
    )
    out.append("<g class='aios-axis-y' fill='currentColor'>")
    for t, label in zip(yticks, ylabels):
        y = sy(t)
        out.append(
            f"<line x1='{left}' x2='{width - right}' y1='{y:.1f}' y2='{y:.1f}' stroke='currentColor' "
            f"stroke-opacity='0.12'/><text class='aios-tick' x='{left - 5}' y='{y + FONT * 0.35:.1f}' "
            f"text-anchor='end'>{label}</text>"
        )
    out.append("</g><g class='aios-axis-x' fill='currentColor'>")
    for t, label in zip(xticks, xlabels):
        out.append(
            f"<text class='aios-tick' x='{sx(t):.1f}' y='{height - 4}' text-anchor='middle'>{label}</text>"
            f"<line x1='{sx(t):.1f}' x2='{sx(t):.1f}' y1='{top + ph}' y2='{top + ph + 3}' stroke='currentColor'/>"
        )
    out.append(
        f"</g><g stroke='currentColor' stroke-opacity='0.5'><line x1='{left}' x2='{left}' y1='{top}' "
        f"y2='{top + ph}'/><line x1='{left}' x2='{width - right}' y1='{top + ph}' y2='{top + ph}'/></g>"
        f"<title>{html.escape(title)} against {html.escape(x_label)}</title>"
    )
    for s in shown:
        xy = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s.points)
        last_x, last_y = s.points[-1]
        tip = f"{s.label}: {fmt(last_y)} at {x_label} {fmt_count(last_x)}"
        out.append(
            f"<g class='aios-series' data-series='{html.escape(s.label)}'><title>{html.escape(tip)}</title>"
            f"<polyline class='aios-line' fill='none' stroke='{s.color}' stroke-width='1.5' "
            f"stroke-linejoin='round' points='{xy}'/>"
        )
        if len(s.points) <= 40:  # sparse series (evaluations) show their points
            out.extend(f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='2.2' fill='{s.color}'/>" for x, y in s.points)
        out.append("</g>")
    out.append("</svg></figure>")
    return "".join(out)


# ---- a job's charts -------------------------------------------------------------------------------------------


def points(rows: Iterable[Mapping[str, Any]], name: str, split: str | None = None) -> list[Point]:
    """``(step, value)`` of metric ``name`` from training rows (``split`` None) or one evaluation split."""
    out = []
    for r in rows:
        v = r.get(name)
        if r.get(M.SPLIT) == split and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append((float(r[M.STEP]), float(v)))
    return out


def splits(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The evaluation splits among the rows, in first-seen order."""
    seen: dict[str, None] = {}
    for r in rows:
        if r.get(M.SPLIT):
            seen.setdefault(str(r[M.SPLIT]), None)
    return list(seen)


def color(split: str, index: int = 0) -> str:
    return SPLIT_COLORS.get(split) or OTHER_COLORS[index % len(OTHER_COLORS)]


def charted(rows: Sequence[Mapping[str, Any]], names: Iterable[str] | None = None) -> list[str]:
    """The metrics that get a chart beside the loss: the charted ones the rows hold; before any row comes, a
    placeholder for the first charted one of ``names`` (the job's metric names), else for accuracy."""
    if rows:
        return [m for m in CHARTED if any(m in r for r in rows)]
    expected = [m for m in CHARTED if m in set(names or ())]
    return expected[:1] or [M.ACCURACY]


def job_charts(
    rows: Sequence[Mapping[str, Any]],
    names: Iterable[str] | None = None,
    *,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """The charts of a job's metric rows: the loss (train and each evaluation split), then each quality metric,
    each chart on its own axes, in one wrapping row."""
    evals = splits(rows)

    def lines(name: str) -> list[Series]:
        out = [Series("train", points(rows, name), color("train"))]
        return out + [Series(s, points(rows, name, s), color(s, i)) for i, s in enumerate(evals)]

    figures = [line_chart("Loss", lines(M.LOSS), key=M.LOSS, log_y="auto", width=width, height=height)]
    for name in charted(rows, names):
        label = M.LABELS.get(name, name)
        figures.append(
            line_chart(label[:1].upper() + label[1:], lines(name), key=name, log_y=False, width=width, height=height)
        )
    return f"<div class='aios-charts' style='{BOX_STYLE}'>" + "".join(figures) + "</div>"
