"""The one drawing of a job's charts (aios_lab.charts) and the widget's pure parts: numbers in, markup out.

The markup is well-formed XML, so the tests read it with ElementTree and check what a reader sees: one figure per
metric, each with its own y axis, round tick labels, a log axis for a loss spanning decades, a legend per series.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from aios_lab import charts
from aios_lab.charts import Series, fmt, fmt_count, job_charts, line_chart, log_ticks, nice_ticks, thin
from aios_lab.widgets import actions, status_parts

SVG = "{http://www.w3.org/2000/svg}"


def rows(n: int = 200, every: int = 10, eval_every: int = 200, task: str = "classification") -> list[dict]:
    out = []
    for s in range(every, n * every + 1, every):
        row = {"step": s, "time": float(s), "loss": 2.3 * math.exp(-s / 200) + 3e-4, "examples_per_s": 5000.0}
        if task == "classification":
            row["accuracy"] = 1 - 0.9 * math.exp(-s / 300)
        out.append(row)
        if s % eval_every == 0:
            ev = {"step": s, "time": float(s), "split": "val", "loss": 2.3 * math.exp(-s / 250) + 0.05}
            if task == "classification":
                ev["accuracy"] = 0.98 - 0.9 * math.exp(-s / 300)
            out.append(ev)
    return out


def figures(markup: str) -> list[ET.Element]:
    root = ET.fromstring(markup)
    return [root] if root.tag == "figure" else root.findall("figure")


def y_labels(fig: ET.Element) -> list[str]:
    return [t.text for t in fig.iter(f"{SVG}text") if t.get("class") == "aios-tick" and t.get("text-anchor") == "end"]


def x_labels(fig: ET.Element) -> list[str]:
    return [
        t.text for t in fig.iter(f"{SVG}text") if t.get("class") == "aios-tick" and t.get("text-anchor") == "middle"
    ]


def test_numbers_read_short():
    assert [fmt(v) for v in (0, 0.123456, 2.5, 1.234e-5, 3.4e6, -0.5, 0.001)] == [
        "0",
        "0.1235",
        "2.5",
        "1.234e-5",
        "3.4e6",
        "-0.5",
        "0.001",
    ]
    assert [fmt_count(v) for v in (0, 950, 1500, 200_000, 2.1e6, 12.5)] == ["0", "950", "1.5k", "200k", "2.1M", "12.5"]


def test_ticks_are_round_and_inside_the_range():
    assert nice_ticks(0, 1, 5) == (0.2, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(0.13, 0.91, 4)[1] == [0.2, 0.4, 0.6, 0.8]
    assert nice_ticks(1, 1)[1] == []
    for t in nice_ticks(3.7, 91.2, 5)[1]:
        assert 3.7 <= t <= 91.2
    assert log_ticks(0.00035, 6.01) == [0.001, 0.01, 0.1, 1.0]
    assert log_ticks(0.11, 2.3) == [0.2, 0.5, 1.0, 2.0]  # few decades: 2x and 5x between them
    assert log_ticks(0, 1) == []


def test_thin_keeps_the_ends_and_bounds_the_count():
    assert thin(list(range(100)), 5) == [0, 25, 50, 74, 99]
    assert thin([1, 2], 5) == [1, 2]


def test_a_job_has_a_loss_chart_and_a_metric_chart_each_on_its_own_axis():
    loss, acc = figures(job_charts(rows()))
    assert (loss.get("data-chart"), acc.get("data-chart")) == ("loss", "accuracy")
    # the loss falls from 2.3 to 3e-4: a log axis with decade ticks; accuracy keeps a linear axis from 0 to 1
    assert loss.get("data-scale") == "log" and y_labels(loss) == ["0.001", "0.01", "0.1", "1"]
    assert acc.get("data-scale") == "linear" and y_labels(acc) == ["0", "0.2", "0.4", "0.6", "0.8", "1"]
    assert x_labels(loss) == ["500", "1k", "1.5k", "2k"]  # steps, not a lone "10"
    for fig in (loss, acc):
        legend = [i.get("data-series") for i in fig.iter("span") if i.get("class") == "aios-legend-item"]
        assert legend == ["train", "val"]
        lines = [g.get("data-series") for g in fig.iter(f"{SVG}g") if g.get("class") == "aios-series"]
        assert lines == ["train", "val"]
        svg = fig.find(f"{SVG}svg")
        w, h = float(svg.get("width")), float(svg.get("height"))
        for poly in fig.iter(f"{SVG}polyline"):  # every point is drawn inside the chart
            for pair in poly.get("points").split():
                x, y = map(float, pair.split(","))
                assert 0 <= x <= w and 0 <= y <= h
    assert "val 0.9" in "".join(acc.itertext())  # the legend carries the latest value


def test_linear_loss_when_it_spans_less_than_a_decade_and_log_when_asked():
    flat = [{"step": s, "time": 0, "loss": 1 + 1 / s} for s in range(1, 50)]
    (fig,) = figures(line_chart("Loss", [Series("train", [(r["step"], r["loss"]) for r in flat], "#000")]))
    assert fig.get("data-scale") == "linear"
    (fig,) = figures(line_chart("Loss", [Series("train", [(1, 1.0), (2, 1.5)], "#000")], log_y=True))
    assert fig.get("data-scale") == "log"
    (fig,) = figures(line_chart("Loss", [Series("train", [(1, -1.0), (2, 100.0)], "#000")], log_y=True))
    assert fig.get("data-scale") == "linear"  # a log axis cannot show values <= 0


def test_regression_jobs_chart_the_loss_only_and_empty_jobs_show_placeholders():
    (loss,) = figures(job_charts(rows(task="regression"), ["loss", "mse"]))
    assert loss.get("data-chart") == "loss"
    empty = figures(job_charts([]))
    assert [f.get("data-chart") for f in empty] == ["loss", "accuracy"]
    assert all("no points yet" in "".join(f.itertext()) for f in empty)
    assert [f.get("data-chart") for f in figures(job_charts([], ["loss", "mse"]))] == ["loss", "mse"]


def test_single_points_non_finite_values_and_long_series():
    one = figures(job_charts([{"step": 5, "time": 0, "loss": 0.5, "accuracy": float("nan")}]))
    assert len(one) == 2 and one[0].find(f".//{SVG}circle") is not None
    long = [{"step": s, "time": 0, "loss": 1.0 / s} for s in range(1, 50_001)]
    (fig,) = figures(job_charts(long))
    (poly,) = list(fig.iter(f"{SVG}polyline"))
    assert len(poly.get("points").split()) == charts.MAX_POINTS


def test_labels_are_escaped():
    markup = line_chart("<b>", [Series("<script>", [(1, 1.0), (2, 2.0)], "#000")])
    assert "<script>" not in markup and "&lt;script&gt;" in markup
    ET.fromstring(markup)


@pytest.mark.parametrize(
    "state, expected",
    [
        ("queued", ["cancel"]),
        ("running", ["cancel"]),
        ("succeeded", []),
        ("cancelled", ["resume"]),
        ("interrupted", ["resume"]),
        ("failed", ["resume"]),
    ],
)
def test_buttons_follow_the_state(state, expected):
    assert actions(state) == expected


def test_the_progress_line_shows_every_latest_number():
    info = {
        "state": "running",
        "step": 120,
        "steps": 300,
        "eta_s": 65,
        "metrics": {
            "train": {"loss": 0.25, "examples_per_s": 5120.0, "input_wait": 0.031},
            "val": {"loss": 0.3, "accuracy": 0.98123},
        },
    }
    assert status_parts(info) == [
        "step 120/300 (40%)",
        "loss 0.25",
        "val loss 0.3",
        "val accuracy 0.9812",
        "5.12k examples/s",
        "input wait 3%",
        "ETA 1m05s",
    ]
    done = dict(info, state="succeeded", step=300, metrics={})
    assert status_parts(done) == ["step 300/300 (100%)"]
