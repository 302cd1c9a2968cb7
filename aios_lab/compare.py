"""``aios.compare(job, ...)`` / ``%aios compare JOB [JOB ...]``: jobs side by side.

Overlaid curves of each metric (train loss, and every evaluation metric per split), by step and by wall time
since each job's first row; a table of each metric's final and best value; and only the config keys whose
values differ between the jobs. ``Comparison.to_json()`` is the data a sidebar view draws from.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from . import metric_names as mn
from .charts import BOX_STYLE, Series, line_chart
from .errors import InvalidInput
from .render import Table

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
SKIP_KEYS = ("provenance", "train.model.source", "train.coordinator", "train.process_id")
CURVES = (mn.LOSS, mn.ACCURACY, mn.MSE, mn.PERPLEXITY)
MAX_JOBS = 10


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if any(key == s or key.startswith(s + ".") for s in SKIP_KEYS):
            continue
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def differing(configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{key: {job: value}}`` for the keys whose values are not the same in every job."""
    flat = {job: flatten(cfg) for job, cfg in configs.items()}
    keys = sorted({k for f in flat.values() for k in f})
    out = {}
    for key in keys:
        values = {job: f.get(key) for job, f in flat.items()}
        if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
            out[key] = values
    return out


def _series_key(row: dict[str, Any], name: str) -> str:
    return f"{row.get(mn.SPLIT) or 'train'}.{name}"


class Comparison:
    """Jobs side by side: ``curves``, ``summary`` (final and best of each metric), ``config`` (what differs)."""

    def __init__(self, names: list[str], rows: dict[str, list[dict[str, Any]]], info: dict[str, dict[str, Any]]):
        self.jobs, self.info = names, info
        self.curves: dict[str, dict[str, dict[str, list[list[float]]]]] = {}  # metric -> job -> {"step", "time"}
        for job in names:
            t0 = rows[job][0][mn.TIME] if rows[job] else 0.0
            for row in rows[job]:
                for name in CURVES:
                    v = row.get(name)
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                        c = self.curves.setdefault(_series_key(row, name), {}).setdefault(job, {"step": [], "time": []})
                        c["step"].append([row[mn.STEP], float(v)])
                        c["time"].append([round(row[mn.TIME] - t0, 3), float(v)])
        self.config = differing({job: info[job]["config"] for job in names})

    def summary(self) -> list[dict[str, Any]]:
        """One entry per job: state, step, and each metric's final and best value."""
        out = []
        for job in self.jobs:
            entry: dict[str, Any] = {"job": job, "state": self.info[job]["state"], "step": self.info[job]["step"]}
            for key, per_job in self.curves.items():
                pts = per_job.get(job, {}).get("step", [])
                if pts:
                    name = key.split(".", 1)[1]
                    pick = max if mn.HIGHER_IS_BETTER.get(name) else min
                    entry[f"{key} final"] = pts[-1][1]
                    entry[f"{key} best"] = pick(v for _, v in pts)
            out.append(entry)
        return out

    def metrics(self) -> list[str]:
        """The curves' keys, evaluation splits first (``val.loss``, ``val.accuracy``, ``train.loss``, ...)."""
        return sorted(self.curves, key=lambda k: (k.startswith("train."), CURVES.index(k.split(".", 1)[1]), k))

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "metrics": self.metrics(),
            "curves": self.curves,
            "summary": self.summary(),
            "config": self.config,
        }

    def summary_table(self) -> Table:
        keys = [f"{m} {which}" for m in self.metrics() for which in ("final", "best")]
        rows = [(e["job"], e["state"], e["step"], *(e.get(k) for k in keys)) for e in self.summary()]
        return Table(["job", "state", "step", *keys], rows, title="final and best")

    def config_table(self) -> Table:
        rows = [(key, *(values.get(j) for j in self.jobs)) for key, values in self.config.items()]
        return Table(["config", *self.jobs], rows, title="settings that differ", empty="the same settings")

    def charts(self, x: str = "step") -> str:
        """Overlaid curves, one chart per metric, against ``x`` ("step" or "time")."""
        figures = []
        for key in self.metrics():
            series = [
                Series(job, self.curves[key][job][x], PALETTE[i % len(PALETTE)])
                for i, job in enumerate(self.jobs)
                if job in self.curves[key]
            ]
            name = key.split(".", 1)[1]
            figures.append(
                line_chart(
                    f"{key} by {'step' if x == 'step' else 'time (s)'}",
                    series,
                    key=f"{key}-{x}",
                    log_y="auto" if name == mn.LOSS else False,
                    x_label="step" if x == "step" else "seconds",
                )
            )
        return f"<div class='aios-charts' style='{BOX_STYLE}'>" + "".join(figures) + "</div>"

    def _repr_html_(self) -> str:
        return (
            f"<div class='aios-compare' data-jobs='{html.escape(','.join(self.jobs))}'>"
            f"{self.charts('step')}{self.charts('time')}"
            f"{self.summary_table()._repr_html_()}{self.config_table()._repr_html_()}</div>"
        )

    def __str__(self) -> str:
        return f"{self.summary_table()}\n\n{self.config_table()}"

    __repr__ = __str__


def compare(*jobs: str) -> Comparison:
    """Compare jobs by name (at least one, at most ``MAX_JOBS``): curves, final/best metrics, differing config.

    >>> aios.compare("lr-t03", "lr-t07", "lr-t11")
    """
    from .jobs import job as get_job

    names = list(dict.fromkeys(jobs))
    if not names:
        raise InvalidInput("say which jobs to compare: %aios compare JOB [JOB ...]")
    if len(names) > MAX_JOBS:
        raise InvalidInput(f"compare at most {MAX_JOBS} jobs at a time, not {len(names)}")
    handles = [get_job(n) for n in names]  # NotFound for an unknown one, before anything is read
    rows = {j.name: j.metrics() for j in handles}
    info = {j.name: j.refresh() for j in handles}
    return Comparison(names, rows, info)


__all__ = ["Comparison", "compare", "differing", "flatten"]
