"""The sidebar's REST routes under /aios/api/, through a real Jupyter server on a loopback port with a token.

Covers: 403 without a token on every route, XSRF on writes (cookie-authenticated POSTs need a matching
X-XSRFToken), ETag/304 polling, the unavailable-feature answers, and every job route against one real
detached training job (detail, metrics since a step, log tail, cancel, resume, 404, 409, 400).
"""

from __future__ import annotations

import time

import pytest
import requests
from _jupyter_server import Server, start

import aios_lab as aios

GETS = [
    "overview",
    "jobs",
    "devices",
    "models",
    "endpoints",
    "datasets",
    "jobs/srv-job",
    "jobs/srv-job/metrics?since=0",
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


def wait_for(cond, timeout=90.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


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
    assert set(body) == {"jobs", "devices", "models", "endpoints", "datasets"}
    for kind, section in body.items():
        assert isinstance(section[kind], list) and isinstance(section["available"], bool)
        if not section["available"]:
            assert section[kind] == [] and section["reason"]  # a part not installed yet says so, never a 500
    assert body["jobs"]["available"] and body["devices"]["available"]
    assert len(body["devices"]["devices"]) >= 1 and body["devices"]["queue"] == []
    etag = r.headers["Etag"]
    again = get(server, "overview", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    # a change (a new dataset) changes the ETag
    aios.dataset("digits", "sklearn:digits")
    changed = get(server, "overview", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["Etag"] != etag
    assert [d["name"] for d in changed.json()["datasets"]["datasets"]] == ["digits"]


@pytest.mark.parametrize("kind", ["jobs", "devices", "models", "endpoints", "datasets"])
def test_each_collection_has_its_route(server, home, kind):
    r = get(server, kind)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body[kind], list) and "available" in body
    assert r.headers["Etag"] and get(server, kind, headers={"If-None-Match": r.headers["Etag"]}).status_code == 304


def test_unknown_jobs_and_bad_arguments(server, home):
    r = get(server, "jobs/no-such-job")
    assert r.status_code == 404 and "no-such-job" in r.json()["message"] and r.json()["missing"] == "job"
    assert get(server, "jobs/no-such-job/metrics").status_code == 404
    assert get(server, "jobs/no-such-job/log").status_code == 404
    r = requests.post(server.api("jobs/no-such-job/cancel"), headers=server.auth, timeout=30)
    assert r.status_code == 404
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

    # resume is refused while it runs (409), cancel works (token-authenticated: no XSRF needed)
    r = requests.post(server.api("jobs/srv-job/resume"), headers=server.auth, json={}, timeout=30)
    assert r.status_code == 409 and "running" in r.json()["message"]
    r = requests.post(server.api("jobs/srv-job/cancel"), headers=server.auth, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "srv-job"
    wait_for(lambda: get(server, "jobs/srv-job").json()["state"] == "cancelled", what="cancelled")

    # resume with a bad body, then a good one
    for bad in ("not json", '{"steps": -5}', '{"steps": "many"}', '{"steps": true}'):
        r = requests.post(server.api("jobs/srv-job/resume"), headers=server.auth, data=bad, timeout=30)
        assert r.status_code == 400, (bad, r.text)
    step = get(server, "jobs/srv-job").json()["step"]
    r = requests.post(
        server.api("jobs/srv-job/resume"), headers=server.auth, json={"steps": step + 100_000}, timeout=30
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"] in ("queued", "running") and r.json()["steps"] == step + 100_000
    r = requests.post(server.api("jobs/srv-job/cancel"), headers=server.auth, timeout=30)
    assert r.status_code == 200
    wait_for(lambda: get(server, "jobs/srv-job").json()["state"] == "cancelled", what="cancelled again")


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


def test_missing_parts_answer_empty_and_unavailable_not_500():
    """In-process: a module or function not there yet gives an empty list with a reason; a failing
    section reports its error without sinking the overview; API values become plain JSON."""
    import dataclasses
    import math
    from pathlib import Path

    import numpy as np

    from aios_lab.jupyter_ext import views

    gone = views._listing("models", "aios_lab.no_such_part", "list_models")
    assert gone["models"] == [] and gone["available"] is False and "aios_lab.no_such_part" in gone["reason"]
    with pytest.raises(views.Unavailable, match="not available yet"):
        views.api("aios_lab.errors", "no_such_function")

    def broken():
        raise RuntimeError("catalog is busy")

    section = views._section(broken, "endpoints")
    assert section == {"endpoints": [], "available": True, "error": "RuntimeError: catalog is busy"}

    @dataclasses.dataclass
    class Row:
        path: Path
        n: np.int64

    class WithJson:
        def to_json(self):
            return {"loss": np.float32(0.5), "bad": math.nan, "ids": np.arange(3), "row": Row(Path("/x"), np.int64(4))}

    assert views.jsonable([WithJson()]) == [{"loss": 0.5, "bad": None, "ids": [0, 1, 2], "row": {"path": "/x", "n": 4}}]
    assert views.downsample(list(range(100)), 5) == [0, 25, 50, 74, 99]
    assert views.downsample([1.0, 2.0], 5) == [1.0, 2.0]


def test_endpoints_show_readiness_and_request_rate(server, home):
    """A real serving endpoint (no models): ready, and its request rate from its Prometheus metrics."""
    import requests as rq

    from aios_lab.procs import free_port

    ep = aios.serve(port=free_port())
    try:
        first = wait_for(
            lambda: [e for e in get(server, "endpoints").json()["endpoints"] if e["url"] == ep.url],
            what="the endpoint in the list",
        )[0]
        assert first["ready"] is True and first["state"] == "running"
        for _ in range(30):  # unauthenticated requests still count as requests served
            rq.get(ep.url + "/v2/repository/index", timeout=5)
        time.sleep(2.1)
        later = [e for e in get(server, "endpoints").json()["endpoints"] if e["url"] == ep.url][0]
        assert later["requests_per_s"] is not None and later["requests_per_s"] > 0, later
    finally:
        ep.stop()
    gone = [e for e in get(server, "endpoints").json()["endpoints"] if e["url"] == ep.url]
    assert not gone or gone[0]["ready"] is False or gone[0]["state"] != "running"
