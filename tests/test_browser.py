"""The AIOS sidebar and the notebook job widget in a real browser: JupyterLab on a loopback port with a token,
real training jobs, headless Debian chromium driven by Playwright (``executable_path``: no browser download).

Sidebar: open it, see a job appear and its step advance, open its panel (charts, config, log), press cancel,
see it become cancelled. Notebook: the live widgets of a succeeded and a cancelled job show the same charts as
the job panel (separate axes, legends that do not overlap, no cut-off text) and only the buttons their state
allows. Cluster, sweeps, comparisons: the Devices section lists a connected Ray cluster's nodes, Endpoints show
language-model numbers and a canary, a real sweep appears under Sweeps and opens its trials and chart, and two
ticked jobs open side by side. Chat: Models → Chat on a language model served by a real endpoint opens its panel,
and a typed message streams a reply back through the Jupyter server. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from _jupyter_server import cluster_node, connect_cluster, insert_endpoint, llm_status, published_status, start

import aios_lab as aios

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
JOB = "browser-job"

pytestmark = pytest.mark.timeout(150)


def browse(width: int, height: int, drive, console_errors: bool = False) -> list[str]:
    """Run ``drive(page)`` in headless chromium with a ``width`` x ``height`` page; returns the page's errors
    (uncaught exceptions, and console errors too when asked)."""
    from playwright import sync_api

    assert CHROMIUM, "the browser test needs Debian's chromium: run `make browser` (make test does)"
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            if console_errors:
                page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))
            drive(page)
        finally:
            browser.close()
    return errors


@pytest.fixture
def lab(tmp_path, aios_home):
    srv = start(tmp_path / "lab", aios_home, lab=True)
    yield srv
    srv.stop()


def test_sidebar_tracks_and_cancels_a_real_job(lab, artifacts):
    assert CHROMIUM, "the browser test needs Debian's chromium: run `make browser` (make test does)"
    aios.dataset("digits", "sklearn:digits")
    jobs: list = []
    try:
        errors = browse(1440, 860, lambda page: _drive(page, lab, artifacts, jobs), console_errors=True)
    finally:
        for job in jobs:
            if job.state in ("queued", "running"):
                job.cancel()
    assert jobs and jobs[0].wait(timeout=60) == "cancelled"
    ours = [e for e in errors if "aios" in e.lower()]
    assert not ours, ours
    assert "Traceback" not in lab.log_text(), lab.log_text()[-3000:]


def _start_job():
    return aios.train(
        JOB,
        dataset="digits",
        model="mlp",
        devices=1,
        steps=200_000,
        batch=32,
        checkpoint_every=25,
        eval_every=50,
        lr=3e-3,
    )


def _drive(page, lab, artifacts, jobs: list) -> None:
    page.set_default_timeout(30_000)
    page.goto(f"{lab.url}lab?token={lab.token}")
    page.wait_for_selector("#jp-main-dock-panel", state="attached")
    page.wait_for_selector("#jupyterlab-splash", state="detached")

    tab = page.locator('.jp-SideBar .lm-TabBar-tab[data-id="aios-sidebar"]')
    tab.wait_for()
    assert tab.get_attribute("title") == "AIOS: jobs, devices, models"
    if "lm-mod-current" not in (tab.get_attribute("class") or ""):
        tab.click()
    sidebar = page.locator("#aios-sidebar")
    sidebar.wait_for()
    for section in ("Jobs", "Devices", "Models", "Endpoints", "Datasets"):
        assert sidebar.get_by_text(section, exact=True).count() >= 1, section

    sidebar.get_by_text("No jobs yet", exact=False).wait_for()  # the empty state
    sidebar.locator('.aios-datasets .aios-item[data-name="digits"]').wait_for()

    # a job started from Python shows up by itself (the sidebar polls at most 1.5 s apart)
    jobs.append(_start_job())
    row = sidebar.locator(f'.aios-job[data-job="{JOB}"]')
    row.wait_for(timeout=10_000)
    # the step advances while we watch (the sidebar polls; the worker writes the catalog)
    page.wait_for_function(
        """name => { const s = document.querySelector(`.aios-job[data-job="${name}"] .aios-job-step`);
                     return s && Number(s.dataset.step) > 0; }""",
        arg=JOB,
        timeout=60_000,
    )
    first = int(row.locator(".aios-job-step").get_attribute("data-step"))
    page.wait_for_function(
        """([name, first]) => { const s = document.querySelector(`.aios-job[data-job="${name}"] .aios-job-step`);
                                return s && Number(s.dataset.step) > first; }""",
        arg=[JOB, first],
        timeout=20_000,
    )
    assert row.get_attribute("data-state") == "running"
    assert sidebar.locator(f'.aios-device .aios-badge:text("{JOB}")').count() == 1  # Devices: who holds what

    # the job's panel: curves, config, checkpoints, log
    row.locator(".aios-job-name").click()
    panel = page.locator(f'.aios-job-panel .aios-panel-body[data-job="{JOB}"]')
    panel.wait_for()
    panel.locator(".aios-charts-host figure.aios-chart[data-chart='loss'] polyline.aios-line").first.wait_for()
    assert panel.locator(".aios-charts-host figure.aios-chart").count() == 2
    page.wait_for_function(
        """() => { const l = document.querySelector('.aios-job-panel .aios-log');
                   return l && l.textContent.length > 20; }"""
    )
    row.locator(".aios-sparkline").wait_for()
    page.wait_for_timeout(1500)  # let the sparkline and curves gather a few more points
    page.screenshot(path=os.path.join(artifacts, "sidebar-running.png"))

    # cancel from the sidebar: checkpoint, then stop
    row.locator('[data-action="cancel"]').click()
    sidebar.locator(f'.aios-job[data-job="{JOB}"][data-state="cancelled"]').wait_for(timeout=45_000)
    assert row.locator(".aios-badge").inner_text() == "cancelled"
    assert row.locator('[data-action="resume"]').count() == 1
    panel_cancelled = page.locator(f'.aios-job-panel .aios-panel-body[data-job="{JOB}"][data-state="cancelled"]')
    panel_cancelled.wait_for(timeout=15_000)
    page.screenshot(path=os.path.join(artifacts, "sidebar-cancelled.png"))

    # an endpoint whose last hot swap failed says so, from the status it publishes in its catalog row
    insert_endpoint("http://127.0.0.1:9", "127.0.0.1", 9, published_status(time.time()))
    endpoint = sidebar.locator('.aios-endpoint[data-name="http://127.0.0.1:9"]')
    endpoint.locator(".aios-swap-failure").wait_for(timeout=10_000)
    text = endpoint.inner_text()
    assert "hot swap of digits@production to v4 failed (2 tries)" in text and "still serving v3" in text, text
    assert "12.5 req/s" in text and endpoint.locator(".aios-badge").inner_text() == "ready", text
    endpoint.screenshot(path=os.path.join(artifacts, "sidebar-endpoint.png"))


# ---- the notebook widget --------------------------------------------------------------------------------------

DONE, STOPPED = "nb-done", "nb-stopped"
NOTEBOOK = "widgets.ipynb"

# Geometry read in the page: every legend item's box, the text of elements that must not be cut off, tick labels
# that must lie inside their chart.
MEASURE = """root => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const charts = [...root.querySelectorAll('figure.aios-chart')].map(f => ({
    chart: f.dataset.chart,
    scale: f.dataset.scale,
    yticks: [...f.querySelectorAll('.aios-axis-y text')].map(t => t.textContent),
    legend: [...f.querySelectorAll('.aios-legend-item')].map(i => ({text: i.textContent, box: box(i)})),
    outside: [...f.querySelectorAll('svg.aios-chart-svg text')].filter(t => {
      const b = t.getBBox(), svg = t.ownerSVGElement.viewBox.baseVal;
      return b.x < 0 || b.y < 0 || b.x + b.width > svg.width || b.y + b.height > svg.height;
    }).map(t => t.textContent),
  }));
  const cut = [...root.querySelectorAll('.aios-progress-text span, .aios-header, .aios-legend-item, .aios-chart-title')]
    .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent);
  const button = sel => { const b = root.querySelector(sel);
                          return {visible: !!b && b.offsetParent !== null, enabled: !!b && !b.disabled}; };
  return {charts, cut, cancel: button('button.aios-cancel'), resume: button('button.aios-resume'),
          progress: root.querySelector('.aios-progress-text').textContent};
}"""


def _overlaps(a, b) -> bool:
    return a[0] < b[2] - 0.5 and b[0] < a[2] - 0.5 and a[1] < b[3] - 0.5 and b[1] < a[3] - 0.5


def _notebook(root) -> None:
    cells = [
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
        for source in ("import aios_lab as aios\naios.job('nb-done').widget()", "aios.job('nb-stopped').widget()")
    ]
    nb = {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (root / NOTEBOOK).write_text(json.dumps(nb))


def _finished_jobs():
    """A job that succeeded and one cancelled part way, both with training and evaluation rows."""
    aios.dataset("digits", "sklearn:digits")
    common = dict(dataset="digits", model="mlp", devices=1, batch=32, checkpoint_every=20, eval_every=20, lr=3e-3)
    done = aios.train(DONE, steps=120, **common)
    stopped = aios.train(STOPPED, steps=200_000, **common)
    deadline = time.monotonic() + 90
    while not any(r.get("split") for r in stopped.metrics()) or stopped.step < 60:
        assert time.monotonic() < deadline, f"{STOPPED} made no progress: {stopped.log_tail(20)}"
        time.sleep(0.2)
    stopped.cancel()
    assert done.wait(timeout=90) == "succeeded", done.log_tail(30)
    assert stopped.wait(timeout=60) == "cancelled", stopped.log_tail(30)
    return done, stopped


def test_notebook_widget_draws_what_the_job_panel_draws(lab, artifacts):
    assert CHROMIUM, "the browser test needs Debian's chromium: run `make browser` (make test does)"
    _finished_jobs()
    _notebook(lab.root)
    try:
        errors = browse(1280, 1400, lambda page: _check_widgets(page, lab, artifacts))
    finally:
        stopped = aios.job(STOPPED)
        if stopped.state in ("queued", "running"):
            stopped.cancel()
        stopped.wait(timeout=60)
    assert not errors, errors
    assert "Traceback" not in lab.log_text(), lab.log_text()[-3000:]


def _check_widgets(page, lab, artifacts) -> None:
    page.set_default_timeout(60_000)
    page.goto(f"{lab.url}lab/tree/{NOTEBOOK}?token={lab.token}")
    page.wait_for_selector("#jp-main-dock-panel", state="attached")
    page.wait_for_selector("#jupyterlab-splash", state="detached")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell")
    page.wait_for_function(
        """() => { const w = window.jupyterapp.shell.currentWidget;
                   return w && w.sessionContext && w.sessionContext.session
                          && w.sessionContext.session.kernel && w.sessionContext.session.kernel.status === 'idle'; }"""
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    widgets = page.locator(".aios-job-widget")
    page.wait_for_function("() => document.querySelectorAll('.aios-job-widget figure.aios-chart').length === 4")
    assert widgets.count() == 2
    page.wait_for_timeout(500)  # fonts and layout settle
    page.screenshot(path=os.path.join(artifacts, "widget-notebook.png"), full_page=True)
    done, stopped = (widgets.nth(i) for i in range(2))
    done.screenshot(path=os.path.join(artifacts, "widget-succeeded.png"))
    stopped.screenshot(path=os.path.join(artifacts, "widget-cancelled.png"))

    for name, widget, state in ((DONE, done, "succeeded"), (STOPPED, stopped, "cancelled")):
        assert widget.locator(f".aios-state[data-state='{state}']").count() == 1, name
        m = widget.evaluate(MEASURE)
        loss, metric = m["charts"]
        assert (loss["chart"], metric["chart"]) == ("loss", "accuracy"), m["charts"]
        assert len(loss["yticks"]) >= 2 and len(metric["yticks"]) >= 2 and loss["yticks"] != metric["yticks"]
        assert all(0 <= float(t) <= 1 for t in metric["yticks"])  # accuracy on its own axis, not the loss's
        items = [i for c in m["charts"] for i in c["legend"]]
        assert [i["text"].split()[0] for i in items] == ["train", "val", "train", "val"], items
        for i, a in enumerate(items):
            for b in items[i + 1 :]:
                assert not _overlaps(a["box"], b["box"]), (name, a, b)
        assert not m["cut"], (name, m["cut"])
        assert not any(c["outside"] for c in m["charts"]), (name, m["charts"])
        assert "val accuracy" in m["progress"] and "examples/s" in m["progress"], m["progress"]
        assert m["cancel"] == {"visible": False, "enabled": False}, (name, m["cancel"])  # nothing left to cancel
        if state == "succeeded":
            assert m["resume"] == {"visible": False, "enabled": False}, name  # finished: nothing to resume
        else:
            assert m["resume"] == {"visible": True, "enabled": True}, name

    # Resume in the widget restarts the cancelled job; the widget follows it and offers Cancel instead
    stopped.locator("button.aios-resume").click()
    stopped.locator(".aios-state[data-state='queued'], .aios-state[data-state='running']").wait_for()
    stopped.locator("button.aios-cancel:not([disabled])").wait_for()
    assert not stopped.locator("button.aios-resume").is_visible()
    stopped.locator("button.aios-cancel").click()
    stopped.locator(".aios-state[data-state='cancelled']").wait_for()
    stopped.locator("button.aios-resume:not([disabled])").wait_for()

    # the job panel shows the very same drawing, rendered by the server with the same module
    widget_charts = done.locator(".aios-charts").evaluate("e => e.outerHTML")
    page.evaluate(f"() => window.jupyterapp.commands.execute('aios:open-job', {{name: '{DONE}'}})")
    panel = page.locator(f'.aios-job-panel .aios-panel-body[data-job="{DONE}"]')
    panel.locator(".aios-charts-host figure.aios-chart").first.wait_for()
    assert panel.locator(".aios-charts-host .aios-charts").evaluate("e => e.outerHTML") == widget_charts
    page.screenshot(path=os.path.join(artifacts, "job-panel-succeeded.png"))


# ---- cluster nodes, language models, sweeps and comparisons --------------------------------------------------

SWEEP = "bsweep"


def test_sidebar_shows_cluster_llm_stats_sweeps_and_comparisons(lab, artifacts):
    assert CHROMIUM, "the browser test needs Debian's chromium: run `make browser` (make test does)"
    connect_cluster([cluster_node(0), cluster_node(1, gpus=4), cluster_node(2, alive=False)])
    insert_endpoint("http://127.0.0.1:7", "127.0.0.1", 7, llm_status(time.time()))
    aios.dataset("digits", "sklearn:digits", split="train=0.8,val=0.2")
    sweep = aios.sweep(
        SWEEP, "digits", model="mlp", over="lr=1e-3|3e-2", trials=2, parallel=2, steps=20, eval_every=10, batch=64
    )
    try:
        errors = browse(1440, 900, lambda page: _drive_more(page, lab, artifacts, sweep))
    finally:
        if not sweep.done:
            sweep.cancel()
    assert not errors, errors
    assert "Traceback" not in lab.log_text(), lab.log_text()[-3000:]


def _drive_more(page, lab, artifacts, sweep) -> None:
    page.set_default_timeout(30_000)
    page.goto(f"{lab.url}lab?token={lab.token}")
    page.wait_for_selector("#jupyterlab-splash", state="detached")
    tab = page.locator('.jp-SideBar .lm-TabBar-tab[data-id="aios-sidebar"]')
    tab.wait_for()
    if "lm-mod-current" not in (tab.get_attribute("class") or ""):
        tab.click()
    sidebar = page.locator("#aios-sidebar")

    # Devices: the Ray cluster's nodes as last seen (nodes.json), a dead one marked
    cluster = sidebar.locator('.aios-cluster[data-address="10.0.0.5:6379"]')
    cluster.wait_for()
    assert "2/3 nodes alive" in cluster.locator(".aios-subhead").inner_text()
    gpu = cluster.locator('.aios-node[data-host="worker-1"]')
    assert gpu.locator(".aios-node-resources").inner_text() == "8 CPU · 4 GPU · 32.0 GiB"
    assert gpu.locator(".aios-badge").inner_text() == "alive"
    assert cluster.locator('.aios-node[data-host="worker-2"] .aios-badge').inner_text() == "dead"
    assert "head" in cluster.locator('.aios-node[data-host="worker-0"]').inner_text()
    cluster.screenshot(path=os.path.join(artifacts, "sidebar-cluster.png"))

    # Endpoints: a language model's numbers and a running canary, from the endpoint's published status
    endpoint = sidebar.locator('.aios-endpoint[data-name="http://127.0.0.1:7"]')
    llm = endpoint.locator('.aios-llm-model[data-model="chat"] .aios-llm').inner_text()
    assert "456.7 tok/s" in llm and "TTFT p50 12.5 ms / p99 80.25 ms" in llm and "KV 3/16" in llm, llm
    assert "3 running, 1 waiting" in llm, llm
    routes = endpoint.locator('.aios-llm-model[data-model="chat"] .aios-llm-routes').inner_text()
    assert "/v1/completions" in routes and "/v2/models/chat/generate" in routes, routes
    canary = endpoint.locator('.aios-canary[data-model="digits"]').inner_text()
    assert canary.startswith("canary digits v4 at 25% (base v3)"), canary
    endpoint.screenshot(path=os.path.join(artifacts, "sidebar-endpoint-llm.png"))

    # Sweeps: the sweep appears, runs to the end (the sidebar polls) and says its best trial
    row = sidebar.locator(f'.aios-sweep[data-name="{SWEEP}"]')
    row.wait_for()
    sidebar.locator(f'.aios-sweep[data-name="{SWEEP}"][data-state="succeeded"]').wait_for(timeout=150_000)
    assert row.locator(".aios-sweep-counts").inner_text().startswith("2/2 trials (2 succeeded)")
    best = sweep.best()
    assert row.locator(".aios-sweep-best").inner_text().startswith(f"best {best.job}: val.loss ")
    page.screenshot(path=os.path.join(artifacts, "sidebar-sweeps.png"))

    # its panel: the trials table (best marked) and the widget's chart of val.loss against step
    row.locator(".aios-sweep-name").click()
    panel = page.locator(f'.aios-sweep-panel .aios-panel-body[data-sweep="{SWEEP}"]')
    panel.locator(".aios-charts-host figure.aios-chart").wait_for()
    assert panel.locator("tr.aios-trial").count() == 2
    assert panel.locator("tr.aios-trial-best").get_attribute("data-job") == best.job
    assert panel.locator(".aios-charts-host .aios-series").count() == 2
    page.screenshot(path=os.path.join(artifacts, "sweep-panel.png"))

    # Compare: tick the two trials in the Jobs list, open them side by side
    for job in (f"{SWEEP}-t00", f"{SWEEP}-t01"):
        sidebar.locator(f'.aios-job[data-job="{job}"] .aios-job-select').check()
    sidebar.locator(".aios-compare-open").click()
    compare = page.locator(f'.aios-compare-panel .aios-panel-body[data-jobs="{SWEEP}-t00,{SWEEP}-t01"]')
    compare.locator(".aios-charts-host figure.aios-chart").first.wait_for()
    assert compare.locator(".aios-compare-summary tbody tr").count() == 2
    assert compare.locator('.aios-compare-config tr[data-key="train.lr"]').count() == 1
    page.screenshot(path=os.path.join(artifacts, "compare-panel.png"))


# ---- the chat panel -------------------------------------------------------------------------------------------


def test_chat_panel_streams_a_reply_from_a_real_endpoint(tmp_path, aios_home, artifacts):
    """Models → Chat on the language model opens its panel; a message typed there streams back from a real
    endpoint serving the tiny Llama fixture, through the Jupyter server (which holds the token)."""
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from aios_lab import registry
    from aios_lab.procs import free_port

    assert CHROMIUM, "the browser test needs Debian's chromium: run `make browser` (make test does)"
    registry.import_model("chat", str(Path(__file__).parent / "fixtures" / "hf" / "llama"))
    ep = None
    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(start, tmp_path / "lab", aios_home, lab=True)  # while the endpoint loads the model
        try:
            ep = aios.serve(port=free_port(), models=["chat"], lm_slots=2, lm_max_len=64, status_interval_s=0.5)
            lab = starting.result()
            errors = browse(1280, 800, lambda page: _chat(page, lab, ep, artifacts))
        finally:
            if ep is not None:
                ep.stop()
            if starting.exception() is None:
                starting.result().stop()
    assert not errors, errors
    assert "Traceback" not in lab.log_text(), lab.log_text()[-3000:]


# Remember every text the reply being streamed showed (the panel marks it .aios-chat-streaming).
WATCH_STREAMING = """root => {
  root.__streamed = new Set();
  new MutationObserver(() => {
    const t = root.querySelector('.aios-chat-streaming .aios-chat-text');
    if (t) root.__streamed.add(t.textContent);
  }).observe(root, {subtree: true, childList: true, characterData: true});
}"""


def _chat(page, lab, ep, artifacts) -> None:
    page.set_default_timeout(30_000)
    page.goto(f"{lab.url}lab?token={lab.token}")
    page.wait_for_selector("#jupyterlab-splash", state="detached")
    tab = page.locator('.jp-SideBar .lm-TabBar-tab[data-id="aios-sidebar"]')
    tab.wait_for()
    if "lm-mod-current" not in (tab.get_attribute("class") or ""):
        tab.click()
    sidebar = page.locator("#aios-sidebar")
    sidebar.locator(f'.aios-endpoint[data-name="{ep.url}"] .aios-llm-model[data-model="chat"]').wait_for()
    sidebar.locator('.aios-model[data-name="chat"] .aios-chat-open').click()

    panel = page.locator('.aios-chat-panel .aios-chat[data-model="chat"]')
    panel.wait_for()
    current = page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel")
    assert current.inner_text() == "Chat: chat"
    box = panel.locator("textarea.aios-chat-input")
    box.fill("Hello, who are you?")
    panel.evaluate(WATCH_STREAMING)
    box.press("Enter")
    asked = panel.locator('.aios-chat-message[data-role="user"] .aios-chat-text')
    asked.wait_for()
    assert asked.inner_text() == "Hello, who are you?"
    answered = '.aios-chat[data-model="chat"][data-busy="false"] .aios-chat-message[data-role="assistant"]'
    page.locator(f"{answered}, .aios-chat-error").first.wait_for()  # the reply is complete, or it failed
    reply = panel.locator('.aios-chat-message[data-role="assistant"] .aios-chat-text').inner_text()
    stats = panel.locator(".aios-chat-stats").inner_text()
    assert reply.strip() and not panel.locator(".aios-chat-error").count(), (reply, stats)
    assert ep.url.removeprefix("http://") in stats and "chat:1" in stats and "tok/s" in stats, stats
    assert box.input_value() == ""  # sent, and the box is ready for the next message
    assert panel.evaluate("e => e.__streamed.size") >= 1  # the reply showed while it streamed
    page.screenshot(path=os.path.join(artifacts, "chat-panel.png"))

    # an error shows in the panel as the endpoint's one line, and the message goes back in the box
    too_long = "Tell me more about that. " * 12
    box.fill(too_long)
    box.press("Enter")
    error = panel.locator(".aios-chat-error")
    error.wait_for()
    assert "context" in error.inner_text() and "64" in error.inner_text(), error.inner_text()
    assert box.input_value() == too_long.strip() and panel.locator('.aios-chat-message[data-role="user"]').count() == 1
