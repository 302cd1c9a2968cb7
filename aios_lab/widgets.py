"""The live job view in a notebook: state, progress with ETA, the job's charts, and Cancel or Resume.

It draws what the sidebar's job panel draws (the charts come from :mod:`aios_lab.charts`, the same module the
panel's server route renders), as plain HTML inside ipywidgets, so it works wherever ipywidgets do (JupyterLab,
nbval, VS Code) with or without the aios labextension. It reads the catalog on a background thread, so the cell
that shows it returns at once; it stops polling when the job ends or the widget is closed.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as widgets

from . import metric_names as M
from .charts import fmt, fmt_count, job_charts
from .errors import AiosError
from .jobs.job import where
from .render import nbytes

STATE_COLORS = {
    "queued": "#888",
    "running": "#1f77b4",
    "succeeded": "#2ca02c",
    "failed": "#d62728",
    "cancelled": "#ff7f0e",
    "interrupted": "#9467bd",
    "pruned": "#aaa",
}
BAR_STYLES = {
    "succeeded": "success",
    "failed": "danger",
    "cancelled": "warning",
    "interrupted": "warning",
    "pruned": "warning",
}
CANCELLABLE = ("queued", "running")
RESUMABLE = ("cancelled", "interrupted", "failed", "pruned")
LINE = "line-height:1.5;font-size:13px"


def actions(state: str) -> list[str]:
    """The buttons a job shows in ``state``: cancel while it can be stopped, resume once it stopped early."""
    return ["cancel"] if state in CANCELLABLE else ["resume"] if state in RESUMABLE else []


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"ETA {h}h{m:02d}m" if h else f"ETA {m}m{s:02d}s" if m else f"ETA {s}s"


def status_parts(info: dict[str, Any]) -> list[str]:
    """The progress line of a job's JSON model: step, latest train and eval metrics, throughput, input wait, ETA."""
    steps = max(1, info["steps"])
    parts = [f"step {info['step']}/{info['steps']} ({min(100, 100 * info['step'] // steps)}%)"]
    metrics = info.get("metrics") or {}
    train = metrics.get("train") or {}
    if isinstance(train.get(M.LOSS), (int, float)):
        parts.append(f"loss {fmt(train[M.LOSS])}")
    for split, values in metrics.items():
        if split == "train" or not isinstance(values, dict):
            continue
        for name in (M.LOSS, M.ACCURACY, M.PERPLEXITY, M.MSE):
            if isinstance(values.get(name), (int, float)):
                parts.append(f"{split} {M.LABELS[name]} {fmt(values[name])}")
    if isinstance(train.get(M.EXAMPLES_PER_S), (int, float)):
        parts.append(f"{fmt_count(train[M.EXAMPLES_PER_S])} {M.LABELS[M.EXAMPLES_PER_S]}")
    if isinstance(train.get(M.INPUT_WAIT), (int, float)):
        parts.append(f"{M.LABELS[M.INPUT_WAIT]} {100 * train[M.INPUT_WAIT]:.0f}%")
    if info["state"] == "running":
        parts.append(_eta(info.get("eta_s")))
    return [p for p in parts if p]


def _header(info: dict[str, Any]) -> str:
    state = info["state"]
    color = STATE_COLORS.get(state, "#888")
    per_device = info.get("state_bytes_per_device")
    devices = f"{info['n_devices']} {info['device_kind']} device{'s' if info['n_devices'] != 1 else ''}"
    if info.get("gang"):  # a cluster job: the hosts and where each rank runs
        devices += f" ({html.escape(where(info))})"
    bits = [
        f"<b class='aios-job-name'>{html.escape(info['name'])}</b> "
        f"<span class='aios-state' data-state='{html.escape(state)}' style='color:{color};font-weight:600'>"
        f"{html.escape(state)}</span>",
        f"{html.escape(_describe(info.get('model')))} on {html.escape(_describe(info.get('dataset')))}",
        devices + (f", {nbytes(per_device)} of state each" if per_device else ""),
    ]
    out = f"<div class='aios-header' style='{LINE};overflow-wrap:anywhere'>" + " · ".join(bits) + "</div>"
    if info.get("error"):
        lines = str(info["error"]).strip().splitlines()[-6:]
        out += (
            f"<div class='aios-error' style='{LINE};color:#d62728;white-space:pre-wrap;overflow-wrap:anywhere'>"
            f"{html.escape(chr(10).join(lines))}</div>"
        )
    return out


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        name = value.get("name") or value.get("target") or "?"
        return f"{name}@{value['version']}" if value.get("version") is not None else str(name)
    return "-" if value is None else str(value)


class JobWidget(widgets.VBox):
    """``%aios job JOB``: reattaches to a job by name and follows it live."""

    def __init__(self, job, interval: float = 1.0):
        self.job, self.interval = job, interval
        full = widgets.Layout(width="100%")
        self.header = widgets.HTML(layout=full)
        self.progress = widgets.IntProgress(
            min=0, max=max(1, job.steps), layout=widgets.Layout(flex="1 1 auto", width="auto", min_width="120px")
        )

        def button() -> widgets.Layout:  # one Layout each: each button is shown or hidden on its own
            return widgets.Layout(width="auto", flex="0 0 auto", margin="0 0 0 8px")

        self.cancel_button = widgets.Button(
            description="Cancel", icon="stop", button_style="warning", tooltip="checkpoint, then stop", layout=button()
        )
        self.resume_button = widgets.Button(
            description="Resume", icon="play", tooltip="continue from the latest checkpoint", layout=button()
        )
        self.cancel_button.add_class("aios-cancel")
        self.resume_button.add_class("aios-resume")
        self.cancel_button.on_click(lambda _b: self._act(self.job.cancel))
        self.resume_button.on_click(lambda _b: self._act(self.job.resume))
        self.status = widgets.HTML(layout=full)
        self.chart = widgets.HTML(layout=full)
        bar = widgets.HBox(
            [self.progress, self.cancel_button, self.resume_button],
            layout=widgets.Layout(width="100%", align_items="center"),
        )
        super().__init__([self.header, bar, self.status, self.chart], layout=full)
        self.add_class("aios-job-widget")
        self._rows: list[dict] = []
        self._message = ""
        self._lock = threading.Lock()  # one update at a time (the follower and a button press)
        self._follow_lock = threading.Lock()  # guards _thread: at most one follower
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.update()
        self._follow_if_running()

    @property
    def finished(self) -> bool:
        """The job has ended and nothing will restart it by itself (an interrupted job may retry)."""
        state = self._info["state"]
        return state in ("succeeded", "failed", "cancelled", "pruned") or (
            state == "interrupted" and not self._info.get("will_resume")
        )

    def update(self) -> None:
        with self._lock:
            self._update()

    def _update(self) -> None:
        self._info = info = self.job.to_json()
        state = info["state"]
        last = self._rows[-1]["step"] if self._rows else None
        if self._rows and info["step"] < last:  # resumed from an earlier checkpoint
            self._rows, last = [], None
        self._rows += self.job.metrics(since_step=last)
        self.header.value = _header(info)
        self.progress.max, self.progress.value = max(1, info["steps"]), min(info["step"], info["steps"])
        self.progress.bar_style = BAR_STYLES.get(state, "")
        parts = status_parts(info) + ([self._message] if self._message else [])
        self.status.value = (
            f"<div class='aios-progress-text' style='{LINE};display:flex;flex-wrap:wrap;gap:0 14px'>"
            + "".join(f"<span style='white-space:nowrap'>{html.escape(p)}</span>" for p in parts)
            + "</div>"
        )
        allowed = actions(state)
        for name, b in (("cancel", self.cancel_button), ("resume", self.resume_button)):
            b.disabled = name not in allowed
            b.layout.display = None if name in allowed else "none"
        self.chart.value = job_charts(self._rows, info.get("metric_names"))

    def _act(self, fn) -> None:
        """Run a button's action; a refusal (AiosError) shows in the progress line instead of vanishing."""
        try:
            fn()
            self._message = ""
        except AiosError as exc:
            self._message = str(exc)
        self.update()
        self._follow_if_running()

    def _follow_if_running(self) -> None:
        with self._follow_lock:
            if self._thread is None and not self._stop.is_set() and not self.finished:
                self._thread = threading.Thread(target=self._follow, daemon=True)
                self._thread.start()

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.update()
            except Exception:  # the job was deleted or the catalog is busy: try again next tick
                continue
            with self._follow_lock:
                if self.finished:
                    self._thread = None
                    return

    def close(self) -> None:
        self._stop.set()
        super().close()

    def wait(self, timeout: float | None = None) -> str:
        """Block until the job ends while the display keeps updating."""
        state = self.job.wait(timeout)
        self.update()
        return state
