"""Canaries on a real server process: a deterministic split of the unversioned route by X-Request-ID, per-version
numbers on /metrics, promote's guard and its ``canary_error_rate`` gate, and the end of a canary under 32
concurrent clients with zero failed requests."""

from __future__ import annotations

import threading
import time

import httpx
import jsonschema
import numpy as np
import orjson
import pytest
from IPython.core.error import UsageError
from test_serve_support import aios_home, publish_tiny, running_server

import aios_lab as aios
from aios_lab import registry
from aios_lab.errors import Conflict, InvalidInput, NotFound
from aios_lab.registry import GateFailed
from aios_lab.verbs import run

pytestmark = pytest.mark.timeout(300)

X = np.random.default_rng(7).normal(size=(1, 4)).astype(np.float32)
BODY = orjson.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": X.ravel().tolist()}]})


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    home = tmp_path_factory.mktemp("canary")
    with aios_home(home):
        publish_tiny("tiny", seed=0)  # v1, production
        publish_tiny("tiny", seed=5, alias=None)  # v2: the candidate
    with running_server(home, status_interval_s=0.2, poll_interval_s=0.2) as s:
        yield s


@pytest.fixture
def home(srv, monkeypatch):
    monkeypatch.setenv("AIOS_HOME", str(srv.home))
    return srv.home


def version_for(c: httpx.Client, rid: str | None = None, body: bytes = BODY) -> httpx.Response:
    return c.post("/v2/models/tiny/infer", content=body, headers={"X-Request-ID": rid} if rid else {})


def test_bad_canary_input_is_one_line_and_changes_nothing(srv, home):
    for percent in (150, -1, float("nan")):
        with pytest.raises(InvalidInput, match="--percent must be"):
            aios.canary("tiny", version=2, percent=percent)
    with pytest.raises(UsageError, match="--percent must be from 0 to 100, got 101"):
        run("serve canary tiny --version 2 --percent 101")
    with pytest.raises(UsageError, match="v1 already serves tiny's unversioned route"):
        run("serve canary tiny --version 1 --percent 10")
    with pytest.raises(UsageError, match="no candidate tiny@9"):
        run("serve canary tiny --version 9")
    with pytest.raises(NotFound, match="no canary runs for model 'tiny'"):
        aios.canary("tiny", end=True)
    with pytest.raises(NotFound, match="no running endpoint serves 'nosuch'"):
        aios.canary("nosuch", version=1)
    with pytest.raises(InvalidInput, match="takes no --version"):
        aios.canary("tiny", version=2, end=True)
    with httpx.Client(base_url=srv.url, headers=srv.headers("infer")) as c:
        r = c.post("/v2/repository/models/tiny/canary", json={"version": 2, "percent": 10})
        assert r.status_code == 403 and "admin" in r.json()["error"]  # infer tokens cannot start one
        assert {version_for(c, str(i)).json()["model_version"] for i in range(20)} == {"1"}


def test_split_is_deterministic_per_request_id_and_counted_per_version(srv, home):
    out = aios.canary("tiny", version=2, percent=30)
    assert out["state"] == "running" and out["percent"] == 30 and out["base"] == "production"
    with httpx.Client(base_url=srv.url, headers=srv.headers()) as c:
        first = {rid: version_for(c, rid).json()["model_version"] for rid in map(str, range(200))}
        again = {rid: version_for(c, rid).json()["model_version"] for rid in map(str, range(200))}
        assert first == again  # the same request id always lands on the same version
        share = sum(v == "2" for v in first.values()) / len(first)
        assert 0.15 < share < 0.45, share
        # only the unversioned infer route is split
        assert {version_for(c, rid).json()["model_version"] for rid in map(str, range(20))} >= {"1", "2"}
        assert c.get("/v2/models/tiny").json()["versions"] == ["1", "2", "production"]
        pinned = [c.post("/v2/models/tiny/versions/production/infer", content=BODY) for _ in range(10)]
        assert {r.json()["model_version"] for r in pinned} == {"1"}
        # raising the percent keeps the requests already on the candidate there
        aios.canary("tiny", percent=60)
        moved = {rid: version_for(c, rid).json()["model_version"] for rid in map(str, range(200))}
        assert all(moved[rid] == "2" for rid, v in first.items() if v == "2")
        metrics = c.get("/metrics", headers=srv.headers("admin")).text
        # the admin route answers as /openapi.json documents it
        doc = c.get("/openapi.json").json()["paths"]["/v2/repository/models/{model_name}/canary"]
        state = c.get("/v2/repository/models/tiny/canary", headers=srv.headers("admin")).json()
        jsonschema.validate(state, doc["get"]["responses"]["200"]["content"]["application/json"]["schema"])
        assert state["percent"] == 60 and set(doc["post"]["responses"]) >= {"200", "400", "401", "403", "404"}
    line = 'aios_serve_canary_requests_total{arm="canary",model="tiny",version="2"}'
    assert line in metrics and 'aios_serve_canary_requests_total{arm="base",model="tiny",version="1"}' in metrics
    assert 'aios_serve_canary_request_seconds_bucket{arm="canary"' in metrics
    assert 'aios_serve_canary_percent{model="tiny",version="2"} 60.0' in metrics
    shown = str(run("serve canary tiny"))
    assert "tiny v2 gets 60% of the unversioned route" in shown and "X-Request-ID" in shown
    assert "canary v2 60%" in str(run("endpoints"))


def test_promote_is_refused_while_a_canary_uses_the_alias_and_gated_on_its_error_rate(srv, home):
    with pytest.raises(Conflict, match="tiny@production is the base of a running canary") as e:
        aios.promote("tiny", "production", version=2, require="canary_error_rate<=0.01")
    assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match="end it first with `%aios serve canary tiny --end`"):
        run("rollback tiny production")
    assert registry.resolve("tiny", "production") == 1
    # bad requests that land on the candidate count as its errors
    with httpx.Client(base_url=srv.url, headers=srv.headers()) as c:
        on_canary = [rid for rid in map(str, range(200)) if version_for(c, rid).json()["model_version"] == "2"]
        for rid in on_canary[:20]:
            assert version_for(c, rid, b'{"inputs": []}').status_code == 400
    ended = aios.canary("tiny", end=True)
    assert ended["state"] == "ended" and ended["arms"]["canary"]["errors"] == 20
    with pytest.raises(GateFailed, match=r"canary_error_rate 0\.\d+ fails canary_error_rate<=0.01"):
        aios.promote("tiny", "production", version=2, require="canary_error_rate<=0.01,canary_requests>=100")
    assert registry.resolve("tiny", "production") == 1


def test_ending_a_canary_under_32_concurrent_clients_fails_no_request_and_the_gate_passes(srv, home):
    publish_tiny("tiny", seed=9, alias=None)  # v3: a clean candidate
    aios.canary("tiny", version=3, percent=50)
    results: list[tuple[float, float, str]] = []
    errors: list[str] = []
    stop = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(base_url=srv.url, headers=srv.headers(), timeout=60) as c:
            i = 0
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    r = version_for(c, f"{n}-{i}")
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                i += 1
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text}")
                else:
                    results.append((t0, time.monotonic(), r.json()["model_version"]))

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(32)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(v == "3" for _, _, v in results) < 50:
        time.sleep(0.1)
    ended_at = time.monotonic()
    out = aios.canary("tiny", end=True)  # back to 100% in one step, under load
    done_at = time.monotonic()
    n_before = len(results)
    while time.monotonic() < done_at + 60 and len(results) < n_before + 200:
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(60)
    assert not errors, errors[:5]
    assert {v for s, _, v in results if s < ended_at} == {"1", "3"}  # both served while the canary ran
    after = [v for s, _, v in results if s > done_at]
    assert len(after) >= 100 and set(after) == {"1"}  # every request sent after the end went to the base
    assert out["arms"]["canary"]["errors"] == 0
    time.sleep(0.5)  # the numbers the gate reads are the endpoint's published status
    result = aios.promote("tiny", "production", version=3, require="canary_error_rate<=0.01,canary_requests>=10")
    assert result.promoted and result.metrics["canary_error_rate"] == 0.0
    assert registry.resolve("tiny", "production") == 3
