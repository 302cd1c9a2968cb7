"""The sidebar's REST routes under /aios/api/, through a real Jupyter server on a loopback port with a token.

Covers: 403 without a token on every route, XSRF on writes (cookie-authenticated POSTs need a matching
X-XSRFToken), ETag/304 polling, errors mapped through ``http_status`` (404 unknown job, 409 conflict, 400
invalid), every job route against one real detached training job (detail, metrics since a step, charts, log
tail, cancel, resume), a log that is a symbolic link refused, and endpoints read from the catalog with no
credential sent anywhere.
"""

from __future__ import annotations

import time

import pytest
import requests
from _jupyter_server import (
    Server,
    cluster_node,
    connect_cluster,
    insert_endpoint,
    llm_status,
    published_status,
    start,
    wait_for,
)

import aios_lab as aios

GETS = [
    "overview",
    "jobs",
    "devices",
    "models",
    "endpoints",
    "datasets",
    "sweeps",
    "sweeps/some-sweep",
    "compare?jobs=a,b",
    "jobs/srv-job",
    "jobs/srv-job/metrics?since=0",
    "jobs/srv-job/charts",
    "jobs/srv-job/log?tail=5",
]
POSTS = ["jobs/srv-job/cancel", "jobs/srv-job/resume"]
JOB = dict(model="mlp", devices=1, steps=200_000, batch=32, checkpoint_every=20, eval_every=40, lr=3e-3)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jupyter")
    srv = start(tmp, tmp / "aios")
    yield srv
    srv.stop()


@pytest.fixture
def home(server, monkeypatch):
    """This test's API calls use the server's AIOS_HOME."""
    monkeypatch.setenv("AIOS_HOME", str(server.home))
    return server.home


def get(server: Server, path: str, **kw) -> requests.Response:
    return requests.get(server.api(path), headers={**server.auth, **kw.pop("headers", {})}, timeout=30, **kw)


def ok(r: requests.Response) -> dict:
    """The JSON of a 200 answer (anything else fails the test with the answer's text)."""
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


@pytest.mark.parametrize("path", GETS)
def test_reads_need_a_token(server, path):
    r = requests.get(server.api(path), timeout=30)
    assert r.status_code == 403, r.text
    r = requests.get(server.api(path), headers={"Authorization": "token wrong"}, timeout=30)
    assert r.status_code == 403


@pytest.mark.parametrize("path", POSTS)
def test_writes_need_a_token(server, path):
    r = requests.post(server.api(path), json={}, timeout=30)
    assert r.status_code == 403, r.text


def test_overview_polls_cheaply_with_etags(server, home):
    r = get(server, "overview")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"jobs", "devices", "models", "endpoints", "datasets", "sweeps"}
    for kind, section in body.items():
        assert isinstance(section[kind], list) and "error" not in section
    assert len(body["devices"]["devices"]) >= 1 and body["devices"]["queue"] == []
    assert body["devices"]["cluster"] is None  # no Ray cluster connected
    etag = r.headers["Etag"]
    again = get(server, "overview", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    # a change (a new dataset) changes the ETag
    aios.dataset("digits", "sklearn:digits")
    changed = get(server, "overview", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["Etag"] != etag
    assert [d["name"] for d in changed.json()["datasets"]["datasets"]] == ["digits"]


@pytest.mark.parametrize("kind", ["jobs", "devices", "models", "endpoints", "datasets", "sweeps"])
def test_each_collection_has_its_route(server, home, kind):
    r = get(server, kind)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body[kind], list) and set(body) <= {kind, "queue", "cluster"}
    assert r.headers["Etag"] and get(server, kind, headers={"If-None-Match": r.headers["Etag"]}).status_code == 304


def test_unknown_jobs_and_bad_arguments(server, home):
    r = get(server, "jobs/no-such-job")
    assert r.status_code == 404 and "no-such-job" in r.json()["message"] and r.json()["error"] == "NotFound"
    for route in ("metrics", "log", "charts"):
        r = get(server, f"jobs/no-such-job/{route}")
        assert r.status_code == 404 and r.json()["error"] == "NotFound", route
    for action in ("cancel", "resume"):
        r = requests.post(server.api(f"jobs/no-such-job/{action}"), headers=server.auth, timeout=30)
        assert r.status_code == 404 and r.json()["error"] == "NotFound", action
    assert get(server, "jobs/Bad..Name").status_code == 404  # not a job name: no route at all
    assert get(server, "jobs/x/metrics?since=abc").status_code == 400
    assert get(server, "jobs/x/log?tail=0").status_code == 400
    assert get(server, "jobs/x/log?tail=999999").status_code == 400


def test_job_routes_against_a_real_job(server, home):
    aios.dataset("digits", "sklearn:digits")
    aios.train("srv-job", dataset="digits", **JOB)
    try:
        _exercise_job_routes(server)
    finally:
        try:
            aios.job("srv-job").cancel()
        except Exception:
            pass


def _exercise_job_routes(server: Server) -> None:
    listed = get(server, "jobs").json()["jobs"]
    assert [j["name"] for j in listed] == ["srv-job"]
    assert {"name", "state", "step", "steps", "devices", "loss", "eta_s", "spark"} <= set(listed[0])

    # it runs, and its step advances as the sidebar polls
    first = wait_for(
        lambda: (j := get(server, "jobs/srv-job").json())["state"] == "running" and j["step"] > 0 and j,
        what="the job to run",
    )
    later = wait_for(
        lambda: (j := get(server, "jobs/srv-job").json())["step"] > first["step"] and j, what="a later step"
    )
    assert later["steps"] == JOB["steps"] and isinstance(later["checkpoints"], list)
    devices = get(server, "devices").json()
    assert any(d["job"] == "srv-job" for d in devices["devices"])

    # metrics since a step: only newer rows, and the sparkline in the overview
    rows = wait_for(lambda: get(server, "jobs/srv-job/metrics").json()["metrics"], what="metric rows")
    assert {"step", "time", "loss"} <= set(rows[0])
    since = rows[0]["step"]
    newer = get(server, f"jobs/srv-job/metrics?since={since}").json()
    assert newer["since_step"] == since and all(r["step"] > since for r in newer["metrics"])
    spark = wait_for(lambda: get(server, "jobs").json()["jobs"][0]["spark"], what="a sparkline")
    assert all(isinstance(v, float) for v in spark)

    log = get(server, "jobs/srv-job/log?tail=3").json()
    assert log["tail"] == 3 and len(log["log"].splitlines()) <= 3

    # the charts: drawn by aios_lab.charts (as in the notebook widget), loss and accuracy on separate axes
    html = wait_for(
        lambda: "data-series='val'" in (h := ok(get(server, "jobs/srv-job/charts"))["html"]) and h,
        what="charts with an evaluation",
    )
    assert "data-chart='loss'" in html and "data-chart='accuracy'" in html and html.count("<polyline") == 4

    # resume is refused while it runs (409), cancel works (token-authenticated: no XSRF needed)
    r = requests.post(server.api("jobs/srv-job/resume"), headers=server.auth, json={}, timeout=30)
    assert r.status_code == 409 and "running" in r.json()["message"] and r.json()["error"] == "Conflict"
    r = requests.post(server.api("jobs/srv-job/cancel"), headers=server.auth, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "srv-job"
    wait_for(lambda: get(server, "jobs/srv-job").json()["state"] == "cancelled", what="cancelled")
    charts = get(server, "jobs/srv-job/charts")  # a stopped job's charts no longer change: the poll is a 304
    assert get(server, "jobs/srv-job/charts", headers={"If-None-Match": charts.headers["Etag"]}).status_code == 304

    # resume with a bad body (wrong JSON types, numbers out of bounds: 400, never 500), then a good one
    bad_bodies = [
        "not json",
        "[]",
        '{"steps": -5}',
        '{"steps": "many"}',
        '{"steps": true}',
        '{"steps": 1e30}',
        '{"steps": 1000000000000000000000000000000}',
        '{"steps": 1e400}',
        '{"steps": 100.5}',
        '{"steps": 500, "lr": 1}',
    ]
    for bad in bad_bodies:
        r = requests.post(server.api("jobs/srv-job/resume"), headers=server.auth, data=bad, timeout=30)
        assert r.status_code == 400 and "steps" in r.json()["message"], (bad, r.text)
    step = get(server, "jobs/srv-job").json()["step"]
    r = requests.post(
        server.api("jobs/srv-job/resume"), headers=server.auth, json={"steps": step + 100_000}, timeout=30
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"] in ("queued", "running") and r.json()["steps"] == step + 100_000
    r = requests.post(server.api("jobs/srv-job/cancel"), headers=server.auth, timeout=30)
    assert r.status_code == 200
    wait_for(lambda: get(server, "jobs/srv-job").json()["state"] == "cancelled", what="cancelled again")

    # a worker.log replaced by a link to a file outside AIOS_HOME is refused, not followed
    secret = server.home.parent / "outside-secret.txt"
    secret.write_text("the-secret-outside-aios-home\n")
    log_file = server.home / "jobs" / "srv-job" / "worker.log"
    log_file.unlink()
    log_file.symlink_to(secret)
    r = get(server, "jobs/srv-job/log?tail=50")
    assert r.status_code == 403 and "symbolic link" in r.json()["message"], r.text
    assert "the-secret" not in r.text


def test_cookie_authenticated_writes_need_a_matching_xsrf_token(server, home):
    """A browser session (login cookie) must also send the _xsrf cookie's value as X-XSRFToken."""
    session = requests.Session()
    assert session.get(server.url + f"api/status?token={server.token}", timeout=30).status_code == 200
    assert any(c.name.startswith("username-") for c in session.cookies)  # logged in by cookie now
    assert session.get(server.api("jobs"), timeout=30).status_code == 200  # reads need no XSRF token
    session.cookies.set("_xsrf", "xsrf-token-of-this-test", domain="127.0.0.1", path="/")
    url = server.api("jobs/nobody/cancel")
    missing = session.post(url, timeout=30)
    assert missing.status_code == 403 and "xsrf" in missing.text.lower()
    wrong = session.post(url, headers={"X-XSRFToken": "another-token"}, timeout=30)
    assert wrong.status_code == 403 and "xsrf" in wrong.text.lower()
    right = session.post(url, headers={"X-XSRFToken": "xsrf-token-of-this-test"}, timeout=30)
    assert right.status_code == 404  # past authentication and XSRF: the job simply does not exist
    resume = session.post(server.api("jobs/nobody/resume"), headers={"X-XSRFToken": "bad"}, json={}, timeout=30)
    assert resume.status_code == 403


def test_the_server_logs_no_errors(server):
    text = server.log_text()
    assert "Traceback" not in text, text[-3000:]
    assert "aios_lab: sidebar API at /aios/api/" in text


def test_a_failing_section_reports_its_error_and_values_become_plain_json():
    """In-process: a failing section reports its error without sinking the overview; API values become JSON."""
    import dataclasses
    import math
    from pathlib import Path

    import numpy as np

    from aios_lab.jupyter_ext import views

    def broken():
        raise RuntimeError("catalog is busy")

    section = views._section(broken, "endpoints")
    assert section == {"endpoints": [], "error": "RuntimeError: catalog is busy"}

    @dataclasses.dataclass
    class Row:
        path: Path
        n: np.int64

    class WithJson:
        def to_json(self):
            return {"loss": np.float32(0.5), "bad": math.nan, "ids": np.arange(3), "row": Row(Path("/x"), np.int64(4))}

    assert views.jsonable([WithJson()]) == [{"loss": 0.5, "bad": None, "ids": [0, 1, 2], "row": {"path": "/x", "n": 4}}]
    held = views._History(run=1, rows=True)
    held.add([{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 2, "loss": 2.5}, {"step": 3, "loss": 1.0}])
    assert [r["loss"] for r in held.rows] == [3.0, 2.5, 1.0]  # a step logged again: the newest wins
    held.add([{"step": s, "loss": 1.0 / s} for s in range(4, 101)] + [{"step": 50, "split": "val", "loss": 9.0}])
    spark = views.spark(held.losses)  # training losses only, thinned to the sparkline's width, the ends kept
    assert len(spark) == views.SPARK_POINTS and spark[0] == 3.0 and spark[-1] == 0.01 and 9.0 not in spark
    assert held.last == 100 and len(held.rows) == 3 + 97 + 1
    lean = views._History(run=1, rows=False)  # the list's sparkline alone holds no rows
    lean.add([{"step": 1, "loss": 3.0}])
    assert lean.rows is None and lean.losses == [3.0]


def test_endpoints_show_readiness_and_numbers_from_the_catalog(server, home):
    """A real serving endpoint (no models): ready, and its request count and rate from the status the server
    writes into its catalog row."""
    from aios_lab.procs import free_port

    ep = aios.serve(port=free_port())
    try:
        first = wait_for(
            lambda: [e for e in get(server, "endpoints").json()["endpoints"] if e["url"] == ep.url and e["ready"]],
            timeout=30,
            what="the endpoint, ready, in the list",
        )[0]
        assert first["state"] == "running" and first["swap_failures"] == [] and first["load_failures"] == []
        for _ in range(30):  # unauthenticated requests still count as requests served
            requests.get(ep.url + "/v2/repository/index", timeout=5)
        later = wait_for(
            lambda: [
                e
                for e in get(server, "endpoints").json()["endpoints"]
                if (e["requests_total"] or 0) >= 30 and e["requests_per_s"] is not None
            ],
            timeout=30,
            what="the request count and rate in the endpoint's status",
        )[0]
        assert later["requests_per_s"] >= 0 and later["errors"] >= 30, later  # 401s: no token was sent
    finally:
        ep.stop()
    gone = [e for e in get(server, "endpoints").json()["endpoints"] if e["url"] == ep.url]
    assert not gone or gone[0]["ready"] is False or gone[0]["state"] != "running"


class _Recorder:
    """A plain HTTP server on every interface that answers 200 and records each request's Host, path and
    whether it carried credentials."""

    def __init__(self) -> None:
        import http.server
        import threading

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                creds = any(h.lower() in ("authorization", "cookie", "x-api-key") for h in self.headers)
                seen.append((self.headers.get("Host"), self.path, creds))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _outward_address() -> str:
    """This machine's address on its outward interface (a UDP connect sends nothing)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: routed like any outside address, never reached
        return s.getsockname()[0]


def test_endpoints_are_read_from_the_catalog_with_no_credential_sent(home):
    """Defect 5: the endpoints view contacts no endpoint (the old one sent the admin token to every listed URL,
    loopback or not); numbers, readiness and a failed hot swap come from the status each server publishes."""
    import ipaddress

    from aios_lab.jupyter_ext import views
    from aios_lab.serve import default_token

    default_token()  # an admin token exists
    outward = _outward_address()
    assert not ipaddress.ip_address(outward).is_loopback
    rec = _Recorder()
    now = time.time()
    local, remote, stale = (
        f"http://127.0.0.1:{rec.port}",
        f"http://{outward}:{rec.port}",
        f"http://localhost:{rec.port}",
    )
    try:
        insert_endpoint(local, "127.0.0.1", rec.port, published_status(now))
        insert_endpoint(remote, outward, rec.port, published_status(now))
        insert_endpoint(stale, "localhost", rec.port, published_status(now - 60))  # it stopped publishing
        listed = {e["url"]: e for e in views.list_endpoints()["endpoints"]}
        time.sleep(0.3)  # a request sent by a helper thread would have arrived by now
    finally:
        rec.close()
    assert rec.seen == []
    assert listed[local]["ready"] is True and listed[remote]["ready"] is True and listed[stale]["ready"] is False
    for e in (listed[local], listed[remote]):
        assert (e["requests_total"], e["requests_per_s"], e["errors"], e["rejected"]) == (1234, 12.5, 3, 0)
        (swap,) = e["swap_failures"]
        assert (swap["model"], swap["version"], swap["serving"], swap["attempts"]) == ("digits", 4, 3, 2)
        assert "status" not in e  # the published document stays on the server side
    unpublished = views.endpoint_status({}, "running", now)
    assert unpublished["ready"] is False and unpublished["requests_per_s"] is None


def test_devices_show_the_connected_clusters_nodes(server, home):
    """A connected Ray cluster's nodes as last seen (``AIOS_HOME/cluster/nodes.json``; no Ray process is started)."""
    from aios_lab.cluster import target

    nodes = [cluster_node(0), cluster_node(1, gpus=4), cluster_node(2, alive=False)]
    connect_cluster(nodes)
    try:
        cluster = ok(get(server, "devices"))["cluster"]
        assert cluster["address"] == "10.0.0.5:6379" and cluster["ray_version"] == "2.49.0"
        shown = [(n["host"], n["cpus"], n["gpus"], n["alive"], n["head"], n["memory"]) for n in cluster["nodes"]]
        assert shown == [
            ("worker-0", 8.0, 0.0, True, True, 32 * 2**30),
            ("worker-1", 8.0, 4.0, True, False, 32 * 2**30),
            ("worker-2", 8.0, 0.0, False, False, 32 * 2**30),
        ]
        assert ok(get(server, "overview"))["devices"]["cluster"] == cluster
    finally:
        target.remove()
    assert ok(get(server, "devices"))["cluster"] is None


def test_cluster_nodes_say_what_aios_runs_there():
    """In-process, in a fresh AIOS_HOME (no queue keeper that would reap a job row without processes): a running
    cluster job's ranks are listed on the nodes they run on."""
    from aios_lab.jupyter_ext import views

    nodes = [cluster_node(0), cluster_node(1, gpus=4), cluster_node(2, alive=False)]
    connect_cluster(nodes)
    ranks = [{"rank": i, **{k: nodes[i][k] for k in ("node_id", "ip", "host")}} for i in (0, 1)]
    _gang_job("gang-job", ranks)
    shown = views.list_devices()["cluster"]["nodes"]
    assert [n["aios"] for n in shown] == [["gang-job rank 0"], ["gang-job rank 1"], []]


def _gang_job(name: str, ranks: list) -> None:
    """A running cluster job's catalog row (``ranks``: where its ranks run)."""
    import json

    from aios_lab.catalog import catalog

    now = time.time()
    with catalog().tx() as db:
        config = {"dataset": {"name": "digits", "version": 1}, "model": "mlp", "task": "classification",
                  "train": {"batch": 8}, "on": "ray", "gang": {"hosts": 2, "devices_per_host": 4}}  # fmt: skip
        db.execute(
            "INSERT INTO jobs (name, state, config, priority, n_devices, devices, device_kind, steps, info, created, "
            "updated) VALUES (?, 'running', ?, 0, 8, '[]', 'cpu', 10, ?, ?, ?)",
            (name, json.dumps(config), json.dumps({"ranks": ranks}), now, now),
        )


def test_endpoints_show_language_model_stats_and_canaries():
    """What an endpoint publishes about its language models (tokens/s, time to first token, slots) and its
    canaries reaches the sidebar's JSON as it is."""
    from aios_lab.jupyter_ext import views

    now = time.time()
    insert_endpoint("http://127.0.0.1:7", "127.0.0.1", 7, llm_status(now))
    (e,) = views.list_endpoints()["endpoints"]
    assert e["llm"]["tokens_per_s"] == 456.7 and e["llm"]["running"] == 3
    (chat,) = e["llm_models"]
    assert (chat["model"], chat["ttft_p50_ms"], chat["ttft_p99_ms"], chat["kv_slots_used"], chat["kv_slots"]) == (
        "chat",
        12.5,
        80.25,
        3,
        16,
    )
    (canary,) = e["canaries"]
    assert (canary["model"], canary["version"], canary["percent"], canary["state"]) == ("digits", 4, 25, "running")
    plain = views.endpoint_status(published_status(now), "running", now)
    assert plain["llm"] is None and plain["llm_models"] == [] and plain["canaries"] == []


def test_a_real_language_model_endpoint_publishes_its_stats(server, home):
    """A real endpoint serving the tiny Llama fixture: after a completion, the sidebar's JSON has its routes,
    tokens generated and time to first token, and its KV slots."""
    from pathlib import Path

    from aios_lab import registry
    from aios_lab.procs import free_port
    from aios_lab.serve import create_token

    registry.import_model("chat", str(Path(__file__).parent / "fixtures" / "hf" / "llama"))
    ep = aios.serve(port=free_port(), models=["chat"], lm_slots=2, lm_max_len=64, status_interval_s=0.5)
    try:
        token = create_token("infer", label="sidebar test")
        body = {"model": "chat", "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}
        r = requests.post(
            ep.url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=120
        )
        assert r.status_code == 200, r.text
        e = wait_for(
            lambda: [
                e
                for e in get(server, "endpoints").json()["endpoints"]
                if e["url"] == ep.url and e["llm_models"] and e["llm_models"][0]["generation_tokens"] >= 1
            ],
            timeout=30,
            what="the language model's stats in the endpoint's status",
        )[0]
    finally:
        ep.stop()
    (chat,) = e["llm_models"]
    assert chat["model"] == "chat" and "/v1/completions" in chat["routes"] and chat["kv_slots"] == 2
    assert chat["ttft_p50_ms"] > 0 and chat["running"] == 0 and e["llm"]["models"] == ["chat"]


def test_sweeps_and_comparisons(server, home):
    """A real two-trial sweep: listed with its state, counts and best; its detail has the trials, curves and the
    widget's chart; its trials compared side by side; unknown names 404, bad lists 400."""
    aios.dataset("digits2", "sklearn:digits", split="train=0.8,val=0.2")
    assert ok(get(server, "sweeps")) == {"sweeps": []}
    sw = aios.sweep(
        "sb", "digits2", model="mlp", over="lr=1e-3|3e-2", trials=2, parallel=2, steps=20, eval_every=10, batch=64
    )
    assert sw.wait(timeout=240) == "succeeded", sw.table()
    (listed,) = ok(get(server, "sweeps"))["sweeps"]
    assert listed["name"] == "sb" and listed["state"] == "succeeded" and listed["counts"] == {"succeeded": 2}
    assert listed["best"]["job"] == sw.best().job and listed["curves"] is None
    assert [(s["name"], s["best"]) for s in ok(get(server, "overview"))["sweeps"]["sweeps"]] == [("sb", listed["best"])]
    detail = ok(get(server, "sweeps/sb"))
    assert [t["job"] for t in detail["trials"]] == ["sb-t00", "sb-t01"]
    assert set(detail["curves"]) == {"sb-t00", "sb-t01"}
    assert "aios-chart" in detail["html"] and detail["html"].count("class='aios-series'") == 2
    r = get(server, "sweeps/no-such-sweep")
    assert r.status_code == 404 and r.json()["error"] == "NotFound"

    both = ok(get(server, "compare?jobs=sb-t00,sb-t01"))
    assert both["jobs"] == ["sb-t00", "sb-t01"] and "val.loss" in both["metrics"] and "train.lr" in both["config"]
    assert [s["job"] for s in both["summary"]] == ["sb-t00", "sb-t01"] and "aios-chart" in both["html"]
    r = get(server, "compare?jobs=sb-t00,nobody")
    assert r.status_code == 404 and "nobody" in r.json()["message"]
    for bad in ("", "?jobs=", "?jobs=Bad..Name", "?jobs=" + ",".join(f"j{i}" for i in range(40))):
        assert get(server, "compare" + bad).status_code == 400, bad
