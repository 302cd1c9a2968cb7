"""Operations of a real server process: hot swap under concurrent load with zero errors, a repository
load call, a bounded soak with concurrent clients, and a graceful drain on SIGTERM.

``AIOS_SOAK_SECONDS`` lengthens the soak (``make soak``); by default it runs a few seconds.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import numpy as np
import orjson
import pytest
from test_serve_support import aios_home, binary_body, move_alias, publish_tiny, running_server, split_binary

pytestmark = pytest.mark.timeout(int(os.environ.get("AIOS_SOAK_SECONDS", "0")) + 180)

X = np.random.default_rng(7).normal(size=(2, 4)).astype(np.float32)
BODY = orjson.dumps({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": X.ravel().tolist()}]})


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve-ops")
    with aios_home(home):
        publish_tiny("tiny", seed=0)
    with running_server(home) as s:
        yield s


@pytest.fixture
def home(srv, monkeypatch):
    monkeypatch.setenv("AIOS_HOME", str(srv.home))
    return srv.home


def predict(version) -> list:
    from aios_lab import registry

    return f32(registry.load("tiny", version, audit=False).predict(X))


def served_version(srv) -> int:
    with httpx.Client(base_url=srv.url, headers=srv.headers()) as c:
        return int(c.post("/v2/models/tiny/infer", content=BODY).json()["model_version"])


def f32(values) -> list:
    """Exact float32 values (JSON carries float32 as shortest decimal strings)."""
    return np.asarray(values, np.float32).ravel().tolist()


class Load:
    """Client threads posting the same request in a loop; every outcome is recorded."""

    def __init__(self, srv, n: int = 6):
        self.srv, self.stop, self.results, self.errors = srv, threading.Event(), [], []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]

    def run(self):
        with httpx.Client(base_url=self.srv.url, headers=self.srv.headers(), timeout=30) as c:
            while not self.stop.is_set():
                try:
                    r = c.post("/v2/models/tiny/infer", content=BODY)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                if r.status_code != 200:
                    self.errors.append(f"{r.status_code} {r.text}")
                    continue
                body = r.json()
                self.results.append((time.monotonic(), body["model_version"], f32(body["outputs"][0]["data"])))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_hot_swap_under_load_has_zero_errors(srv, home):
    v1 = predict(1)
    with Load(srv) as load:
        time.sleep(1.0)
        publish_tiny("tiny", seed=5, alias=None)  # v2
        move_alias("tiny", "production", 2)  # the alias moved: the server swaps by itself
        v2 = predict(2)
        assert v1 != v2
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(v == "2" for _, v, _ in load.results[-50:]):
            time.sleep(0.1)
        time.sleep(0.5)
    assert not load.errors, load.errors[:5]
    versions = [v for _, v, _ in load.results]
    assert "1" in versions and "2" in versions, "the alias move was never served"
    for _, v, out in load.results:
        assert out == (v1 if v == "1" else v2)  # each response is exactly its version's answer
    last_v1 = max(i for i, v in enumerate(versions) if v == "1")
    first_v2 = versions.index("2")
    assert last_v1 - first_v2 < 6 * 4, "requests kept going to the old version after the swap"
    with httpx.Client(base_url=srv.url, headers=srv.headers()) as c:
        assert c.get("/v2/models/tiny").json()["versions"] == ["2", "production"]


def test_repository_load_of_a_version(srv, home):
    publish_tiny("tiny", seed=9, alias=None)  # v3: no alias, so the default route stays on v2
    with httpx.Client(base_url=srv.url, headers=srv.headers("admin"), timeout=60) as c:
        r = c.post("/v2/repository/models/tiny/load", json={"parameters": {"version": "3"}})
        assert r.status_code == 200 and r.json()["version"] == "3"
        r = c.post("/v2/models/tiny/versions/3/infer", content=BODY)
        assert r.json()["model_version"] == "3" and f32(r.json()["outputs"][0]["data"]) == predict(3)
        assert c.post("/v2/models/tiny/infer", content=BODY).json()["model_version"] == "2"
        r = c.post("/v2/repository/models/tiny/load")  # reload: re-resolve the alias, nothing moved
        assert r.status_code == 200 and r.json()["version"] == "2"
    publish_tiny("fresh", seed=1, alias=None)  # a new model: a server serving everything picks it up
    with httpx.Client(base_url=srv.url, headers=srv.headers(), timeout=30) as c:
        deadline = time.monotonic() + 60
        while c.get("/v2/models/fresh/ready").status_code != 200:
            assert time.monotonic() < deadline, "the new model was never loaded"
            time.sleep(0.2)
    from aios_lab.catalog import catalog

    loads = [r["object"] for r in catalog().query("SELECT object FROM audit WHERE action = 'load'")]
    assert "tiny:v3" in loads  # every load verified the manifest and is in the audit log


def test_soak_concurrent_clients_zero_errors(srv, home):
    import tritonclient.http as tc

    seconds = float(os.environ.get("AIOS_SOAK_SECONDS", "4"))
    version = served_version(srv)  # 2 after the hot swap test; 1 when run alone (make soak)
    expected = predict(version)
    xb = X.tobytes()
    bin_body, bin_hdr = binary_body(
        {
            "inputs": [
                {"name": "input", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": len(xb)}}
            ],
            "parameters": {"binary_data_output": True},
        },
        xb,
    )
    errors, counts = [], []
    stop = time.monotonic() + seconds

    def http_client(binary: bool):
        n = 0
        with httpx.Client(base_url=srv.url, headers=srv.headers(), timeout=30) as c:
            while time.monotonic() < stop and n < 200_000:
                try:
                    if binary:
                        r = c.post("/v2/models/tiny/infer", content=bin_body, headers=bin_hdr)
                        head, data = split_binary(r)
                        out = f32(np.frombuffer(data, np.float32))
                    else:
                        r = c.post("/v2/models/tiny/infer", content=BODY)
                        out = f32(r.json()["outputs"][0]["data"])
                    if r.status_code != 200 or out != expected:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                except Exception as exc:
                    errors.append(repr(exc))
                n += 1
        counts.append(n)

    def triton_client():
        n = 0
        client = tc.InferenceServerClient(srv.hostport)
        inp = tc.InferInput("input", [2, 4], "FP32")
        inp.set_data_from_numpy(X)
        while time.monotonic() < stop and n < 200_000:
            try:
                out = client.infer("tiny", [inp], headers=srv.headers()).as_numpy("logits")
                out = f32(out)
                if out != expected:
                    errors.append("wrong triton result")
            except Exception as exc:
                errors.append(repr(exc))
            n += 1
        client.close()
        counts.append(n)

    threads = [threading.Thread(target=http_client, args=(i % 2 == 0,)) for i in range(6)]
    threads += [threading.Thread(target=triton_client) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    assert not errors, errors[:5]
    assert sum(counts) > 100 and len(counts) == 8
    with httpx.Client(base_url=srv.url, headers=srv.headers()) as c:
        assert c.get("/v2/health/ready").status_code == 200
        text = c.get("/metrics").text
    assert f'aios_serve_queue_depth{{model="tiny",version="{version}"}} 0.0' in text


def test_sigterm_drains_requests_in_flight(srv, home):
    """A request whose body is still arriving when SIGTERM comes is answered in full; then the process exits."""
    import aios_lab as aios

    x = np.random.default_rng(3).normal(size=(4096, 4)).astype(np.float32)
    body, hdr = binary_body(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        },
        x.tobytes(),
    )
    started = threading.Event()

    def slow_body():
        yield body[:1000]
        started.set()
        time.sleep(1.0)  # SIGTERM lands here, mid-request
        yield body[1000:]

    result = {}

    def call():
        with httpx.Client(base_url=srv.url, headers=srv.headers(), timeout=60) as c:
            result["r"] = c.post(
                "/v2/models/tiny/infer", content=slow_body(), headers={**hdr, "Content-Length": str(len(body))}
            )

    t = threading.Thread(target=call)
    t.start()
    assert started.wait(10)
    time.sleep(0.2)
    os.kill(srv.ep.pid, signal.SIGTERM)
    t.join(60)
    r = result["r"]
    assert r.status_code == 200, r.text
    head, data = split_binary(r)
    from aios_lab import registry

    np.testing.assert_array_equal(
        np.frombuffer(data, np.float32).reshape(4096, 3),
        registry.load("tiny", int(head["model_version"]), audit=False).predict(x),
    )
    deadline = time.monotonic() + 30
    while srv.ep.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not srv.ep.alive()
    ep = next(e for e in aios.endpoints() if e.url == srv.url)
    assert ep.state == "stopped"
