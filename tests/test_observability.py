"""Prometheus metrics of jobs, devices and the queue from both faces: the Jupyter server extension's authenticated
``GET /aios/api/metrics`` (a real Jupyter server) and ``aios metrics serve`` (a real process on 127.0.0.1), parsed
with prometheus_client's own parsers and checked against a real running, queued and then cancelled job; the
notebook form that detaches, and bad input refused before anything starts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import requests
from _jupyter_server import start
from IPython.core.error import UsageError
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

import aios_lab as aios
from aios_lab import metric_names as mn, observability
from aios_lab.cli import main as cli
from aios_lab.procs import free_port

pytestmark = pytest.mark.timeout(240)

LONG = dict(model="mlp", batch=32, steps=200_000, checkpoint_every=50, eval_every=20, lr=3e-3)
STATES = ("queued", "running", "interrupted", "succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jupyter-metrics")
    srv = start(tmp, tmp / "aios")
    yield srv
    srv.stop()


@pytest.fixture
def home(server, monkeypatch):
    monkeypatch.setenv("AIOS_HOME", str(server.home))
    return server.home


def samples(text: str, openmetrics: bool = False) -> dict[tuple, float]:
    """``{(sample name, sorted labels): value}`` of an exposition, through prometheus_client's parser."""
    parse = parse_openmetrics if openmetrics else parse_text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in parse(text) for s in f.samples}


def value(found: dict[tuple, float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def series(found: dict[tuple, float], name: str) -> dict[tuple, float]:
    return {labels: v for (n, labels), v in found.items() if n == name}


def scrape_jupyter(server, **headers) -> requests.Response:
    return requests.get(server.api("metrics"), headers={**server.auth, **headers}, timeout=30)


def wait_for(cond, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = cond()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def metrics_serve(home, port: int) -> subprocess.Popen:
    """``aios metrics serve --port PORT`` in the foreground of its own process, as a terminal runs it."""
    env = dict(os.environ, AIOS_HOME=str(home))
    cmd = [sys.executable, "-m", "aios_lab.cli", "metrics", "serve", "--port", str(port)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_the_jupyter_route_needs_jupyter_auth_and_speaks_both_formats(server, home):
    assert requests.get(server.api("metrics"), timeout=30).status_code == 403
    assert requests.get(server.api("metrics"), headers={"Authorization": "token nope"}, timeout=30).status_code == 403
    r = scrape_jupyter(server)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "Etag" not in r.headers
    found = samples(r.text)
    assert value(found, "aios_queue_length") == 0 and value(found, "aios_jobs", state="running") == 0
    assert len(series(found, "aios_device_info")) == 8  # the server's 8 forced XLA host devices
    # Prometheus sends its credential as a bearer token and asks for OpenMetrics first
    accept = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1"
    om = scrape_jupyter(server, Authorization=f"Bearer {server.token}", Accept=accept)
    assert om.status_code == 200 and om.headers["Content-Type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n") and samples(om.text, openmetrics=True) == found


def test_a_running_job_and_the_queue_from_both_faces(server, home):
    port = free_port()
    proc = metrics_serve(home, port)
    aios.dataset("digits", "sklearn:digits")
    running = aios.train("obs-run", dataset="digits", devices=8, **LONG)
    queued = aios.train("obs-wait", dataset="digits", devices=4, priority=3, **LONG)
    assert queued.state == "queued"
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        assert proc.stdout.readline().strip() == f"serving metrics on {url} (Ctrl-C stops)"
        wait_for(lambda: any(r.get(mn.SPLIT) == "val" for r in running.metrics()), what="an evaluation")
        wait_for(lambda: any(mn.SPLIT not in r for r in running.metrics()), what="a train row")

        # while it runs, and the other waits behind it
        for text in (scrape_jupyter(server).text, requests.get(url, timeout=30).text):
            found = samples(text)
            assert {s: value(found, "aios_job_state", job_name="obs-run", state=s) for s in STATES} == {
                s: float(s == "running") for s in STATES
            }
            assert value(found, "aios_job_state", job_name="obs-wait", state="queued") == 1
            assert value(found, "aios_jobs", state="running") == 1 and value(found, "aios_jobs", state="queued") == 1
            assert value(found, "aios_queue_length") == 1 and value(found, "aios_queue_devices_requested") == 4
            assert series(found, "aios_job_queue_position") == {(("job_name", "obs-wait"), ("priority", "3")): 0}
            held = series(found, "aios_device_allocated")
            assert held == {(("device", str(i)), ("job_name", "obs-run"), ("kind", "cpu")): 1 for i in range(8)}
            assert sum(series(found, "aios_device_busy").values()) == 8
            assert value(found, "aios_job_devices", job_name="obs-run") == 8
            assert value(found, "aios_job_devices", job_name="obs-wait") == 4
            assert value(found, "aios_job_priority", job_name="obs-wait") == 3
            assert value(found, "aios_job_resident_memory_bytes", job_name="obs-run") > 10_000_000
            assert value(found, "aios_job_step", job_name="obs-run") > 0
            assert value(found, "aios_job_target_steps", job_name="obs-run") == LONG["steps"]
            assert value(found, "aios_job_eval", job_name="obs-run", split="val", metric="accuracy") is not None
            assert value(found, "aios_job_step", job_name="obs-wait") == 0
            assert value(found, "aios_job_loss", job_name="obs-wait") is None  # nothing reported yet
            assert value(
                found,
                "aios_job_info",
                job_name="obs-run",
                dataset="digits",
                model="mlp",
                task="classification",
                device_kind="cpu",
            )
            assert not any(("job", n) in labels for (_, labels) in found for n in ("obs-run", "obs-wait"))

        queued.cancel()
        running.cancel()
        assert running.wait(timeout=120) == "cancelled"

        # stopped: every number equals the job's own, on both faces
        info = running.to_json()
        from_jupyter = samples(scrape_jupyter(server).text)
        assert samples(requests.get(url, timeout=30).text) == from_jupyter
        found = from_jupyter
        train, val = info["metrics"]["train"], info["metrics"]["val"]
        assert value(found, "aios_job_step", job_name="obs-run") == info["step"] > 0
        assert value(found, "aios_job_loss", job_name="obs-run") == train[mn.LOSS]
        assert value(found, "aios_job_examples_per_second", job_name="obs-run") == train[mn.EXAMPLES_PER_S]
        assert value(found, "aios_job_step_seconds", job_name="obs-run") == train[mn.STEP_TIME]
        assert value(found, "aios_job_input_wait_ratio", job_name="obs-run") == train[mn.INPUT_WAIT]
        assert value(found, "aios_job_last_report_timestamp_seconds", job_name="obs-run") == train[mn.TIME]
        evals = {labels: v for labels, v in series(found, "aios_job_eval").items() if ("job_name", "obs-run") in labels}
        assert evals == {
            (("job_name", "obs-run"), ("metric", k), ("split", "val")): v
            for k, v in val.items()
            if k not in (mn.STEP, mn.TIME)
        }
        assert value(found, "aios_job_eval_step", job_name="obs-run", split="val") == val[mn.STEP]
        assert value(found, "aios_job_state", job_name="obs-run", state="cancelled") == 1
        assert value(found, "aios_job_state", job_name="obs-run", state="running") == 0
        assert value(found, "aios_job_ended_timestamp_seconds", job_name="obs-run") == info["ended"]
        assert value(found, "aios_job_created_timestamp_seconds", job_name="obs-run") == info["created"]
        assert value(found, "aios_job_resident_memory_bytes", job_name="obs-run") is None
        assert value(found, "aios_job_state_bytes_per_device", job_name="obs-run") == info["state_bytes_per_device"]
        assert value(found, "aios_jobs", state="cancelled") == 2 and value(found, "aios_queue_length") == 0
        assert series(found, "aios_device_allocated") == {} and sum(series(found, "aios_device_busy").values()) == 0

        # the scrapes only read: neither server started a process (no supervisor, worker or queue keeper)
        assert psutil.Process(server.proc.pid).children(recursive=True) == []
        assert psutil.Process(proc.pid).children(recursive=True) == []
    finally:
        for j in (queued, running):
            try:
                j.cancel()
            except Exception:
                pass
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    # SIGTERM ends the foreground server cleanly, and its record goes with it
    assert proc.returncode == 0 and f"stopped the metrics server on port {port}" in out, out
    assert not (home / "metrics" / f"{port}.json").exists()


def test_in_a_notebook_it_detaches_and_stops(ip, aios_home):
    port = free_port()
    shown = ip.run_line_magic("aios", f"metrics serve --port {port}")
    url = f"http://127.0.0.1:{port}/metrics"
    assert f"serving metrics on {url}" in shown and f"aios metrics stop --port {port}" in shown
    pid = observability.servers()[0].pid
    try:
        assert os.getsid(pid) == pid  # a session of its own: it outlives the kernel
        assert value(samples(requests.get(url, timeout=30).text), "aios_queue_length") == 0
        assert ip.run_line_magic("aios", f"metrics serve --port {port}") == shown  # the running one
        stopped = ip.run_line_magic("aios", f"metrics stop --port {port}")
        assert stopped == f"stopped {url} (pid {pid})"
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert observability.servers() == [] and not (aios_home / "metrics" / f"{port}.json").exists()
        with pytest.raises(UsageError, match="no metrics server on port"):
            ip.run_line_magic("aios", f"metrics stop --port {port}")
    finally:
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    "line, message",
    [
        ("metrics serve --host 0.0.0.0 --detach", "--host 0.0.0.0 would let anyone"),
        ("metrics serve --port 0 --detach", "--port must be a whole number from 1 to 65535"),
        ("metrics serve --port 70000", "--port must be a whole number from 1 to 65535"),
        ("metrics stop", "say which metrics server to stop"),
        ("metrics stop --port 9 --all", "say which metrics server to stop"),
    ],
)
def test_bad_input_is_one_line_and_starts_nothing(aios_home, capsys, line, message):
    assert cli(line.split()) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (aios_home / "metrics").exists()


def test_a_port_in_use_is_refused_in_one_line(aios_home, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for extra in ([], ["--detach"]):
            assert cli(["metrics", "serve", "--port", str(port), *extra]) == 2
            err = capsys.readouterr().err
            assert f"cannot listen on 127.0.0.1:{port}" in err and "pick another --port" in err, err
    assert observability.servers() == [] and not (aios_home / "metrics" / f"{port}.json").exists()


def test_the_cli_prints_what_a_scrape_gets(aios_home, capsys):
    assert cli(["metrics"]) == 0
    found = samples(capsys.readouterr().out)
    assert value(found, "aios_queue_length") == 0 and value(found, "aios_jobs", state="queued") == 0
