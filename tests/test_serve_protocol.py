"""The V2 routes over real HTTP on 127.0.0.1: JSON and binary tensors, httpx and tritonclient unchanged,
auth and roles, every bad input of the issue, and batched results identical to one-by-one results."""

from __future__ import annotations

import concurrent.futures as cf
import gzip
import json
import zlib

import httpx
import numpy as np
import orjson
import pytest
from test_serve_support import binary_body, publish_tiny, running_server, split_binary

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve-protocol")
    from test_serve_support import aios_home

    with aios_home(home):
        publish_tiny("tiny", seed=0)
        publish_tiny("other", seed=1, alias=None, features=3, classes=2)
    with running_server(home, max_body_mb=1.0) as s:
        yield s


@pytest.fixture
def home(srv, monkeypatch):
    """This test runs against the server's AIOS_HOME (catalog, registry, tokens)."""
    monkeypatch.setenv("AIOS_HOME", str(srv.home))
    return srv.home


@pytest.fixture(scope="module")
def client(srv):
    with httpx.Client(base_url=srv.url, headers=srv.headers(), timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def reference(srv):
    """The registry's own predict, the ground truth for every response."""
    from test_serve_support import aios_home

    from aios_lab import registry

    with aios_home(srv.home):
        return registry.load("tiny", "production", audit=False)


def rows(n, seed=0, features=4):
    return np.random.default_rng(seed).normal(size=(n, features)).astype(np.float32)


def infer_json(x, name="input", **extra):
    return {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}], **extra}


# ---------------------------------------------------------------------------------------------- routes


def test_health_needs_no_token_and_metadata_does(srv):
    with httpx.Client(base_url=srv.url) as bare:
        assert bare.get("/v2/health/live").status_code == 200
        assert bare.get("/v2/health/ready").status_code == 200
        for path in ("/v2", "/v2/models/tiny", "/v2/models/tiny/ready", "/metrics", "/openapi.json"):
            r = bare.get(path)
            assert r.status_code == 401, path
            assert "bearer token" in r.json()["error"]


def test_server_and_model_metadata(client):
    meta = client.get("/v2").json()
    assert {"binary_tensor_data", "model_repository", "model_configuration"} <= set(meta["extensions"])
    m = client.get("/v2/models/tiny").json()
    assert m["name"] == "tiny" and "1" in m["versions"] and m["platform"]
    assert m["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert m["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}]
    assert client.get("/v2/models/tiny/versions/1").json()["inputs"] == m["inputs"]
    assert client.get("/v2/models/tiny/versions/production/ready").json() == {"name": "tiny", "ready": True}
    cfg = client.get("/v2/models/tiny/config").json()
    assert cfg["max_batch_size"] == 32 and cfg["input"][0]["dims"] == [4]


def test_json_infer_nested_and_flat_with_id(client, reference):
    x = rows(5)
    r = client.post("/v2/models/tiny/infer", json=infer_json(x, id="req-7"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["id"] == "req-7" and body["model_name"] == "tiny" and body["model_version"] == "1"
    out = body["outputs"][0]
    assert out["name"] == "logits" and out["shape"] == [5, 3] and out["datatype"] == "FP32"
    got = np.asarray(out["data"], np.float32).reshape(5, 3)
    np.testing.assert_array_equal(got, reference.predict(x))
    flat = {"inputs": [{"name": "input", "shape": [5, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}
    r2 = client.post("/v2/models/tiny/versions/1/infer", json=flat)
    np.testing.assert_array_equal(np.asarray(r2.json()["outputs"][0]["data"], np.float32).reshape(5, 3), got)


def test_binary_infer_both_ways(client, reference):
    x = rows(3, seed=1)
    body, hdr = binary_body(
        {
            "inputs": [
                {"name": "input", "shape": [3, 4], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
            ],
            "parameters": {"binary_data_output": True},
        },
        x.tobytes(),
    )
    r = client.post("/v2/models/tiny/infer", content=body, headers=hdr)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    head, data = split_binary(r)
    out = head["outputs"][0]
    assert out["parameters"]["binary_data_size"] == len(data) == 3 * 3 * 4
    np.testing.assert_array_equal(np.frombuffer(data, np.float32).reshape(3, 3), reference.predict(x))
    # binary in, JSON out (per-output binary_data false wins over the default)
    body, hdr = binary_body(
        {
            "inputs": [
                {"name": "input", "shape": [3, 4], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": False}}],
        },
        x.tobytes(),
    )
    r = client.post("/v2/models/tiny/infer", content=body, headers=hdr)
    assert r.headers["content-type"] == "application/json"
    np.testing.assert_array_equal(
        np.asarray(r.json()["outputs"][0]["data"], np.float32).reshape(3, 3), reference.predict(x)
    )


def test_raw_binary_request(client, reference):
    x = rows(2, seed=2)
    r = client.post("/v2/models/tiny/infer", content=x.tobytes(), headers={"Inference-Header-Content-Length": "0"})
    assert r.status_code == 200, r.text
    head, data = split_binary(r)
    np.testing.assert_array_equal(np.frombuffer(data, np.float32).reshape(2, 3), reference.predict(x))


def test_compressed_request_and_response(client, reference):
    x = rows(64, seed=3)
    raw = orjson.dumps(infer_json(x))
    for enc, packed in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw))):
        r = client.post(
            "/v2/models/tiny/infer", content=packed, headers={"Content-Encoding": enc, "Accept-Encoding": enc}
        )
        assert r.status_code == 200, r.text
        assert r.headers.get("content-encoding") == enc  # httpx decoded it for us
        np.testing.assert_array_equal(
            np.asarray(r.json()["outputs"][0]["data"], np.float32).reshape(64, 3), reference.predict(x)
        )
    # metadata is never compressed (tritonclient.http.aio cannot read it)
    assert "content-encoding" not in client.get("/v2/models/tiny", headers={"Accept-Encoding": "gzip"}).headers


def test_tritonclient_unchanged(srv, reference):
    import tritonclient.http as tc
    from tritonclient.utils import InferenceServerException

    client = tc.InferenceServerClient(srv.hostport)
    h = lambda role="infer": dict(srv.headers(role))  # a fresh dict per call: infer() writes into it
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny", headers=h()) and client.is_model_ready("tiny", "1", headers=h())
    assert client.get_server_metadata(headers=h())["name"] == "aios_lab"
    assert client.get_model_metadata("tiny", headers=h())["inputs"][0]["name"] == "input"
    assert client.get_model_config("tiny", headers=h())["max_batch_size"] == 32
    x = rows(7, seed=4)
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)  # binary by default, outputs binary by default
    res = client.infer("tiny", [inp], headers=h(), request_id="t1")
    np.testing.assert_array_equal(res.as_numpy("logits"), reference.predict(x))
    assert res.get_response()["id"] == "t1"
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    res = client.infer(
        "tiny", [inp], outputs=[tc.InferRequestedOutput("logits", binary_data=False)], headers=h(), model_version="1"
    )
    np.testing.assert_array_equal(res.as_numpy("logits"), reference.predict(x))
    res = client.infer(
        "tiny", [inp], headers=h(), request_compression_algorithm="gzip", response_compression_algorithm="deflate"
    )
    np.testing.assert_array_equal(res.as_numpy("logits"), reference.predict(x))
    index = client.get_model_repository_index(headers=h("admin"))
    assert {"name": "tiny", "version": "1", "state": "READY", "reason": ""} in index
    assert any(row["name"] == "other" for row in index)
    with pytest.raises(InferenceServerException, match="admin role"):
        client.get_model_repository_index(headers=h())
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("nosuch", [inp], headers=h())
    client.load_model("other", headers=h("admin"))
    assert client.is_model_ready("other", headers=h())
    client.unload_model("other", headers=h("admin"))
    assert not client.is_model_ready("other", headers=h())
    # the documented gotcha: reusing a headers dict after a binary infer sends a stale header length
    shared = h()
    inp_b = tc.InferInput("input", list(x.shape), "FP32")
    inp_b.set_data_from_numpy(x)
    client.infer("tiny", [inp_b], headers=shared)
    with pytest.raises(InferenceServerException, match="inference header"):  # 400, never a misread
        client.infer("tiny", [inp], outputs=[tc.InferRequestedOutput("logits", binary_data=False)], headers=shared)
    client.close()


def test_batched_results_identical_to_one_by_one(srv, client):
    xs = [rows(1 + i % 3, seed=100 + i) for i in range(48)]
    one_by_one = [client.post("/v2/models/tiny/infer", json=infer_json(x)).json()["outputs"][0]["data"] for x in xs]
    before = _batch_stats(client)

    def call(x):
        with httpx.Client(base_url=srv.url, headers=srv.headers(), timeout=30) as c:
            return [c.post("/v2/models/tiny/infer", json=infer_json(x)).json()["outputs"][0]["data"] for _ in range(3)]

    with cf.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(call, xs))
    for single, repeated in zip(one_by_one, together):
        for r in repeated:
            assert r == single  # bit-identical, each request got exactly its own rows
    batches, total_rows = (a - b for a, b in zip(_batch_stats(client), before))
    assert total_rows == 3 * sum(len(x) for x in xs)
    assert batches < 3 * len(xs), "concurrent requests were never batched together"


def _batch_stats(client) -> tuple[float, float]:
    text = client.get("/metrics").text

    def summed(name):
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + '{model="tiny"'))

    return summed("aios_serve_batch_size_count"), summed("aios_serve_batch_size_sum")


def test_metrics_and_access_log(srv, client):
    client.post("/v2/models/tiny/infer", json=infer_json(rows(1)))
    client.post("/v2/models/nosuch/infer", json=infer_json(rows(1)))
    text = client.get("/metrics").text
    assert 'aios_serve_requests_total{model="tiny",route="infer",status="200",version="1"}' in text
    assert 'status="404"' in text
    assert "aios_serve_request_seconds_bucket" in text and "aios_serve_queue_depth" in text
    import time

    time.sleep(1.2)  # the access log is flushed once a second
    log = (srv.home.resolve() / "serve" / f"{srv.url.rsplit(':', 1)[1]}.access.log").read_text().splitlines()
    rows_ = [json.loads(line) for line in log]
    assert any(r["route"] == "infer" and r["model"] == "tiny" and r["status"] == 200 and r["us"] >= 0 for r in rows_)
    assert all("authorization" not in line.lower() for line in log)


def test_endpoints_and_verbs(home, srv):
    import aios_lab as aios
    from aios_lab.verbs import run

    eps = aios.endpoints()
    ep = next(e for e in eps if e.url == srv.url)
    assert ep.state == "running" and ep.pid == srv.ep.pid and "tiny" in ep.models
    assert str(srv.url) in str(run("endpoints"))
    assert (home.resolve() / "serve" / "token").stat().st_mode & 0o777 == 0o600
    token = str(run("token create --role infer"))
    assert token.startswith("aios_")
    with httpx.Client(base_url=srv.url) as c:
        assert c.get("/v2/models/tiny", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        r = c.post("/v2/repository/index", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403
    # tokens are stored hashed
    from aios_lab.catalog import catalog

    assert all(token not in tuple(map(str, r)) for r in catalog().query("SELECT * FROM tokens"))
    # serve() on the same port returns the running endpoint instead of starting another
    again = aios.serve(port=srv.ep.port)
    assert again.pid == srv.ep.pid
    text = str(run(f"serve --port {srv.ep.port}"))
    assert srv.url in text and "serve/token" in text and "aios token create --role infer" in text


# ---------------------------------------------------------------------------------------------- bad input

X2 = rows(2)
GOOD = {"name": "input", "shape": [2, 4], "datatype": "FP32", "data": X2.ravel().tolist()}


def _with(**change):
    return {"inputs": [{**GOOD, **change}]}


BAD_JSON = {
    "malformed JSON": (b'{"inputs": [', 400, "malformed JSON"),
    "not an object": (b"[1, 2]", 400, "JSON object"),
    "no inputs": (b'{"outputs": []}', 400, "'inputs'"),
    "wrong tensor name": (_with(name="x"), 400, "unknown input 'x'"),
    "wrong shape": (_with(shape=[2, 5]), 400, "expects [N,4]"),
    "wrong rank": (_with(shape=[8]), 400, "expects [N,4]"),
    "wrong datatype": (_with(datatype="FP64"), 400, "expects FP32"),
    "unknown datatype": (_with(datatype="FLOAT"), 400, "unknown datatype"),
    "data length != shape": (_with(data=X2.ravel().tolist()[:-1]), 400, "needs 8"),
    "ragged data": (_with(data=[[1, 2, 3, 4], [1, 2]]), 400, "ragged"),
    "strings as FP32": (_with(data=["a"] * 8), 400, "bad 'data'"),
    "negative dim": (_with(shape=[-2, 4]), 400, "non-negative"),
    "zero rows": (_with(shape=[0, 4], data=[]), 400, "empty"),
    "unknown output": ({**_with(), "outputs": [{"name": "nope"}]}, 400, "unknown output"),
    "missing data": (_with(data=None) | {"inputs": [{k: v for k, v in GOOD.items() if k != "data"}]}, 400, "neither"),
    "FP32 overflow": (_with(data=[1e300] * 8), 400, "out of range for FP32"),
}


@pytest.mark.parametrize("case", list(BAD_JSON))
def test_bad_json_input(client, case):
    body, status, msg = BAD_JSON[case]
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    r = client.post("/v2/models/tiny/infer", content=content)
    assert r.status_code == status, r.text
    assert msg in r.json()["error"]


BAD_BINARY = {
    "header length past the body": ("999", None, "inference header size"),
    "negative header length": ("-1", None, "inference header size"),
    "unparsable header length": ("abc", None, "Unable to parse"),
    "header length cuts the JSON": ("10", None, "malformed JSON"),
    "binary size lies (short)": (None, -4, "needs 32"),
    "binary size lies (long)": (None, +4, "runs past the end"),
    "bytes nobody declared": (None, "extra", "no input declares"),
}


@pytest.mark.parametrize("case", list(BAD_BINARY))
def test_bad_binary_input(client, case):
    ihcl, size_delta, msg = BAD_BINARY[case]
    x = rows(2)
    size = x.nbytes + (size_delta if isinstance(size_delta, int) else 0)
    body, hdr = binary_body(
        {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": size}}]},
        x.tobytes(),
    )
    if size_delta == "extra":
        body += b"\0\0\0\0"
    if ihcl is not None:
        hdr["Inference-Header-Content-Length"] = ihcl
    r = client.post("/v2/models/tiny/infer", content=body, headers=hdr)
    assert r.status_code == 400, r.text
    assert msg in r.json()["error"]


def test_raw_body_of_partial_rows(client):
    r = client.post("/v2/models/tiny/infer", content=b"\0" * 18, headers={"Inference-Header-Content-Length": "0"})
    assert r.status_code == 400 and "whole number" in r.json()["error"]


def test_unknown_model_version_route_and_method(client):
    for path, status, msg in (
        ("/v2/models/nosuch", 404, "unknown model"),
        ("/v2/models/tiny/versions/9", 404, "no loaded version '9'"),
        ("/v2/models/tiny/versions/staging/ready", 404, "no loaded version"),
        ("/v2/models/tiny/bogus", 404, "no route"),
        ("/nowhere", 404, "no route"),
    ):
        r = client.get(path)
        assert r.status_code == status and msg in r.json()["error"], (path, r.text)
    r = client.post("/v2/models/nosuch/infer", json=infer_json(rows(1)))
    assert r.status_code == 404 and "unknown model" in r.json()["error"]
    r = client.get("/v2/models/tiny/infer")
    assert r.status_code == 405 and r.json() == {"error": "Method Not Allowed"} and r.headers["allow"] == "POST"


def test_oversized_and_bomb_bodies(client):
    big = b"[" + b"0," * (600 * 1024) + b"0]"  # 1.2 MB, limit 1 MB
    r = client.post("/v2/models/tiny/infer", content=big)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    bomb = gzip.compress(b" " * (8 * 1024 * 1024))  # small on the wire, 8 MB inflated
    r = client.post("/v2/models/tiny/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413
    r = client.post("/v2/models/tiny/infer", content=b"{}", headers={"Content-Encoding": "br"})
    assert r.status_code == 415 and "gzip" in r.json()["error"]


def test_auth_failures(srv):
    x = infer_json(rows(1))
    with httpx.Client(base_url=srv.url) as c:
        r = c.post("/v2/models/tiny/infer", json=x)
        assert r.status_code == 401 and "missing bearer token" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
        for bad in ("Bearer aios_wrong", "Bearer", "Basic dXNlcjpwdw==", srv.infer):
            r = c.post("/v2/models/tiny/infer", json=x, headers={"Authorization": bad})
            assert r.status_code == 401 and "error" in r.json(), bad
        for path in ("/v2/repository/index", "/v2/repository/models/tiny/load", "/v2/repository/models/tiny/unload"):
            r = c.post(path, headers=srv.headers("infer"))
            assert r.status_code == 403 and "admin" in r.json()["error"]
        assert c.post("/v2/models/tiny/infer", json=x, headers=srv.headers("admin")).status_code == 200


def test_repository_bad_input(srv):
    with httpx.Client(base_url=srv.url, headers=srv.headers("admin")) as c:
        assert c.post("/v2/repository/models/nosuch/load").status_code == 404
        assert c.post("/v2/repository/models/tiny/load", content=b"{no").status_code == 400
        r = c.post("/v2/repository/models/tiny/load", json={"parameters": {"version": "99"}})
        assert r.status_code == 404 and "no version 99" in r.json()["error"]
        r = c.post("/v2/repository/models/tiny/load", json={"parameters": {"config": "{}"}})
        assert r.status_code == 501
        assert c.post("/v2/repository/index", json={"ready": "yes"}).status_code == 400
        assert c.post("/v2/repository/index", json={"ready": True}).json() == [
            {"name": "tiny", "version": "1", "state": "READY", "reason": ""}
        ]


def test_server_unharmed_after_bad_input(client, reference):
    assert client.get("/v2/health/ready").status_code == 200
    x = rows(4, seed=9)
    r = client.post("/v2/models/tiny/infer", json=infer_json(x))
    np.testing.assert_array_equal(
        np.asarray(r.json()["outputs"][0]["data"], np.float32).reshape(4, 3), reference.predict(x)
    )
