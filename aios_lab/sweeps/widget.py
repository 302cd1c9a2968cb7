"""The live view of a sweep in a notebook: state and best so far, the trials (state, settings, metric), and the
metric against step for every trial (pruned ones grey), with a Cancel button.

Plain ipywidgets HTML (it renders under nbval and without the labextension), drawn with :mod:`aios_lab.charts`
from ``Sweep.to_json()``, refreshed on a background thread until the sweep ends.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as widgets

from ..charts import OTHER_COLORS, Series, fmt, line_chart
from ..errors import AiosError
from ..render import Table
from ..widgets import STATE_COLORS

LINE = "line-height:1.5;font-size:13px"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", *OTHER_COLORS)
GREY = "#bbb"
BEST = "#2ca02c"


def header(info: dict[str, Any]) -> str:
    """The sweep's one-line summary: name, state, metric, progress, cost and the best so far."""
    state = info["state"]
    counts = ", ".join(f"{n} {s}" for s, n in sorted(info["counts"].items()))
    best = info.get("best")
    bits = [
        f"<b class='aios-sweep-name'>{html.escape(info['name'])}</b> <span class='aios-state' "
        f"data-state='{html.escape(state)}' style='color:{STATE_COLORS.get(state, '#888')};font-weight:600'>"
        f"{html.escape(state)}</span>",
        f"{html.escape(str(info['model']))} on {html.escape(str(info['dataset']))}",
        f"{html.escape(info['metric'])} ({info['goal']}), {info['sampler']}"
        + (f", early stop {info['early_stop']}" if info["early_stop"] != "none" else ""),
        f"{len(info['trials'])}/{info['trials_total']} trials" + (f" ({counts})" if counts else ""),
        f"{info['device_steps']} device-steps",
    ]
    if best:
        params = ", ".join(f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in best["params"].items())
        bits.append(
            f"<span class='aios-sweep-best'>best {html.escape(best['job'])}: {fmt(best['value'])} ({params})</span>"
        )
    out = f"<div class='aios-header' style='{LINE};overflow-wrap:anywhere'>" + " · ".join(bits) + "</div>"
    if info.get("error"):
        out += f"<div class='aios-error' style='{LINE};color:#d62728'>{html.escape(info['error'])}</div>"
    return out


def chart(info: dict[str, Any]) -> str:
    """The metric against step for every trial: pruned, failed and cancelled ones grey, the best green."""
    series = []
    for i, t in enumerate(info["trials"]):
        points = info["curves"].get(t["job"], [])
        if not points:
            continue
        color = BEST if t["best"] else GREY if t["state"] in ("pruned", "failed", "cancelled") else PALETTE[i % 10]
        series.append(Series(f"t{t['number']}", points, color))
    return line_chart(info["metric"], series, key="sweep", log_y="auto")


def trials_table(info: dict[str, Any]) -> Table:
    keys = list(info["space"])
    rows = [
        (
            t["job"] + (" *" if t["best"] else ""),
            t["state"],
            *(t["params"].get(k) for k in keys),
            t["value"],
            f"{t['step']}/{t['steps']}" if t["steps"] else t["step"],
        )
        for t in info["trials"]
    ]
    return Table(["trial", "state", *keys, info["metric"], "step"], rows, empty="no trial yet")


class SweepWidget(widgets.VBox):
    """``%aios sweep NAME``: follows a sweep live."""

    def __init__(self, sweep, interval: float = 1.0):
        self.sweep, self.interval = sweep, interval
        full = widgets.Layout(width="100%")
        self.header = widgets.HTML(layout=full)
        self.chart = widgets.HTML(layout=full)
        self.table = widgets.HTML(layout=full)
        self.cancel_button = widgets.Button(
            description="Cancel sweep",
            icon="stop",
            button_style="warning",
            tooltip="every trial checkpoints, then stops",
        )
        self.cancel_button.add_class("aios-cancel")
        self.cancel_button.on_click(lambda _b: self._cancel())
        super().__init__([self.header, self.cancel_button, self.chart, self.table], layout=full)
        self.add_class("aios-sweep-widget")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.info: dict[str, Any] = {}
        self.update()
        if not self.finished:
            threading.Thread(target=self._follow, daemon=True).start()

    @property
    def finished(self) -> bool:
        return self.info.get("state") in ("succeeded", "failed", "cancelled")

    def update(self) -> None:
        with self._lock:
            self.info = info = self.sweep.to_json()
            self.header.value = header(info)
            self.chart.value = chart(info)
            self.table.value = trials_table(info)._repr_html_()
            self.cancel_button.layout.display = "none" if self.finished else None

    def _cancel(self) -> None:
        try:
            self.sweep.cancel()
        except AiosError:
            pass
        self.update()

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.update()
            except Exception:  # the catalog is busy or the sweep was deleted: try again next tick
                continue
            if self.finished:
                return

    def close(self) -> None:
        self._stop.set()
        super().close()

    def wait(self, timeout: float | None = None) -> str:
        state = self.sweep.wait(timeout)
        self.update()
        return state


__all__ = ["SweepWidget", "chart", "header", "trials_table"]
