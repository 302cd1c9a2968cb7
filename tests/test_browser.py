"""The AIOS sidebar in a real browser: JupyterLab on a loopback port with a token, a real training job,
headless Debian chromium driven by Playwright (``executable_path``: no browser download).

Open the sidebar, see the job appear and its step advance, open its panel (curves, config, log), press
cancel, see it become cancelled. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest
from _jupyter_server import start

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


@pytest.fixture
def lab(tmp_path, aios_home):
    srv = start(tmp_path / "lab", aios_home, lab=True)
    yield srv
    srv.stop()


def test_sidebar_tracks_and_cancels_a_real_job(lab, artifacts):
    from playwright import sync_api

    assert CHROMIUM, "the browser test needs Debian's chromium: run `make browser` (make test does)"
    started = time.monotonic()
    aios.dataset("digits", "sklearn:digits")
    errors: list[str] = []
    jobs: list = []
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 860})
                page.on("console", lambda m: m.type == "error" and errors.append(m.text))
                page.on("pageerror", lambda e: errors.append(str(e)))
                _drive(page, lab, artifacts, jobs)
            finally:
                browser.close()
    finally:
        for job in jobs:
            if job.state in ("queued", "running"):
                job.cancel()
    assert jobs and jobs[0].wait(timeout=60) == "cancelled"
    ours = [e for e in errors if "aios" in e.lower()]
    assert not ours, ours
    assert "Traceback" not in lab.log_text(), lab.log_text()[-3000:]
    assert time.monotonic() - started < 90


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
    submitted = time.monotonic()
    row = sidebar.locator(f'.aios-job[data-job="{JOB}"]')
    row.wait_for(timeout=10_000)
    assert time.monotonic() - submitted < 3.0
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
    panel.locator(".aios-chart-svg path.aios-line").first.wait_for()
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
