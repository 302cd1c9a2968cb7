"""The live job view: progress with ETA, loss/accuracy curves, state and a cancel button.

It reads the catalog on a background thread, so the cell that shows it returns at once and the
kernel stays free; it stops polling when the job ends or the widget is closed.
"""

from __future__ import annotations

import html
import threading

import ipywidgets as widgets

from .charts import curves_svg
from .render import nbytes

STATE_COLORS = {
    "queued": "#888",
    "running": "#1f77b4",
    "succeeded": "#2ca02c",
    "failed": "#d62728",
    "cancelled": "#ff7f0e",
    "interrupted": "#9467bd",
}


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    m, s = divmod(int(seconds), 60)
    return f"ETA {m}m{s:02d}s" if m else f"ETA {s}s"


class JobWidget(widgets.VBox):
    """``%aios job JOB``: reattaches to a job by name and follows it live."""

    def __init__(self, job, interval: float = 1.0):
        self.job, self.interval = job, interval
        self.header = widgets.HTML()
        self.progress = widgets.IntProgress(
            min=0, max=max(1, job.steps), description="step", layout=widgets.Layout(width="60%")
        )
        self.status = widgets.Label()
        self.chart = widgets.HTML()
        self.cancel_button = widgets.Button(
            description="Cancel", icon="stop", button_style="warning", tooltip="checkpoint, then stop"
        )
        self.cancel_button.on_click(lambda _b: self.job.cancel())
        super().__init__([self.header, widgets.HBox([self.progress, self.status, self.cancel_button]), self.chart])
        self._rows: list[dict] = []
        self._stop = threading.Event()
        self.update()
        if not self.finished:
            threading.Thread(target=self._follow, daemon=True).start()

    @property
    def finished(self) -> bool:
        return self._state in ("succeeded", "failed", "cancelled") or (
            self._state == "interrupted" and not self.job._will_resume()
        )

    def update(self) -> None:
        self.job.refresh()  # notice a worker that died, so the view does not stay "running"
        info = self.job.to_json()
        self._state = info["state"]
        last = self._rows[-1]["step"] if self._rows else None
        if self._rows and info["step"] < last:  # resumed from an earlier checkpoint
            self._rows = []
            last = None
        self._rows += self.job.metrics(since_step=last)
        color = STATE_COLORS.get(info["state"], "#888")
        err = f" — {html.escape(info['error'])}" if info.get("error") else ""
        state_bytes = info.get("state_bytes_per_device")
        per_device = f", {nbytes(state_bytes)} of state each" if state_bytes else ""
        self.header.value = (
            f"<b>{html.escape(info['name'])}</b> <span style='color:{color}'>{info['state']}</span>"
            f" · {html.escape(str(info['model']))} on {html.escape(str(info['dataset']))}"
            f" · {info['n_devices']} {info['device_kind']} device(s){per_device}{err}"
        )
        self.progress.max, self.progress.value = max(1, info["steps"]), min(info["step"], info["steps"])
        bits = [f"{info['step']}/{info['steps']}"]
        if info.get("loss") is not None:
            bits.append(f"loss {info['loss']:.4g}")
        if info.get("accuracy") is not None:
            bits.append(f"val acc {info['accuracy']:.3f}")
        bits.append(_eta(info.get("eta_s")))
        self.status.value = "  ".join(b for b in bits if b)
        self.cancel_button.disabled = info["state"] not in ("queued", "running")
        train = [(r["step"], r["loss"]) for r in self._rows if "split" not in r and r.get("loss") is not None]
        evals = [(r["step"], r["accuracy"]) for r in self._rows if r.get("split") and r.get("accuracy") is not None]
        series = {"loss": train}
        if evals:
            series["val accuracy"] = evals
        self.chart.value = curves_svg(series, width=520, height=170)

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.update()
            except Exception:  # the job was deleted or the catalog is busy: try again next tick
                continue
            if self.finished:
                return

    def close(self) -> None:
        self._stop.set()
        super().close()

    def wait(self, timeout: float | None = None) -> str:
        """Block until the job ends while the display keeps updating."""
        state = self.job.wait(timeout)
        self.update()
        return state
