"""TensorFlow Serving's REST API on its own port of a real server process, called with the request bodies of TF
Serving's REST API documentation (https://www.tensorflow.org/tfx/serving/api_rest), against the documentation's
own toy model: ``half_plus_three`` (y = 0.5 x + 3), published here as a registry version.

The server binds 0.0.0.0 with ``--insecure``, so this module also checks the warning ``aios endpoints`` keeps."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest
from test_serve_support import aios_home, publish_tiny, running_server

from aios_lab.procs import free_port
from aios_lab.serve import create_token, endpoints
from aios_lab.verbs import run

pytestmark = pytest.mark.timeout(240)

HALF_PLUS_THREE = """
import jax.numpy as jnp

def init(rng, x):
    return {"a": jnp.full((1,), 0.5, jnp.float32), "b": jnp.full((1,), 3.0, jnp.float32)}

def apply(params, x):
    return params["a"][0] * x + params["b"][0]
"""


def publish_half_plus_three(name: str, input_shape: tuple, alias: str | None = "production"):
    from aios_lab import registry

    spec = {"kind": "cell", "name": "half_plus_three", "source": HALF_PLUS_THREE, "config": {}}
    params = {"a": np.full((1,), 0.5, np.float32), "b": np.full((1,), 3.0, np.float32)}
    return registry.publish_params(
        name, spec, params, task="regression", input_shape=input_shape, n_outputs=1, alias=alias
    )


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    home = tmp_path_factory.mktemp("tf-serving")
    with aios_home(home):
        publish_half_plus_three("half_plus_three", ())  # one scalar per instance, as in the documentation
        publish_half_plus_three("pairs", (1, 2))  # "List of 2 tensors each of [1, 2] shape"
        publish_tiny("tiny", seed=0)
    port = free_port()
    with running_server(home, host="0.0.0.0", insecure=True, tf_serving_port=port, poll_interval_s=0) as s:
        s.tf = f"http://127.0.0.1:{port}"
        yield s


@pytest.fixture
def home(srv, monkeypatch):
    monkeypatch.setenv("AIOS_HOME", str(srv.home))
    return srv.home


@pytest.fixture
def tf(srv):
    with httpx.Client(base_url=srv.tf, headers=srv.headers(), timeout=30) as c:
        yield c


def test_model_status_as_documented(tf):
    documented = {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    for path in ("", "/versions/1", "/labels/production"):
        r = tf.get(f"/v1/models/half_plus_three{path}")
        assert r.status_code == 200 and r.json() == documented, (path, r.text)


def test_metadata_in_tf_servings_shape(tf):
    r = tf.get("/v1/models/tiny/metadata")
    assert r.status_code == 200
    doc = r.json()
    assert doc["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
    sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["input"] == {
        "dtype": "DT_FLOAT",
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}, {"size": "4", "name": ""}], "unknown_rank": False},
        "name": "input",
    }
    (out,) = sig["outputs"].values()
    assert out["dtype"] == "DT_FLOAT" and [d["size"] for d in out["tensor_shape"]["dim"]] == ["-1", "3"]
    assert tf.get("/v1/models/tiny/versions/1/metadata").json() == doc
    assert tf.get("/v1/models/tiny/labels/production/metadata").json() == doc


def test_predict_with_the_documented_bodies(tf, srv):
    # the documentation's curl example, byte for byte: -d '{"instances": [1.0,2.0,5.0]}'
    r = tf.post("/v1/models/half_plus_three:predict", content=b'{"instances": [1.0,2.0,5.0]}')
    assert r.status_code == 200 and r.json() == {"predictions": [3.5, 4.0, 5.5]}
    r = tf.post("/v1/models/half_plus_three/versions/1:predict", content=b'{"instances": [1.0,2.0,5.0]}')
    assert r.json() == {"predictions": [3.5, 4.0, 5.5]}
    r = tf.post("/v1/models/half_plus_three/labels/production:predict", json={"inputs": [1.0, 2.0, 5.0]})
    assert r.json() == {"outputs": [3.5, 4.0, 5.5]}  # the columnar format
    # "List of 2 tensors each of [1, 2] shape"
    r = tf.post("/v1/models/pairs:predict", content=b'{\n  "instances": [ [[1, 2]], [[3, 4]] ]\n}')
    assert r.json() == {"predictions": [[[3.5, 4.0]], [[4.5, 5.0]]]}
    r = tf.post("/v1/models/pairs:predict", json={"inputs": [[[1, 2]], [[3, 4]]]})
    assert r.json() == {"outputs": [[[3.5, 4.0]], [[4.5, 5.0]]]}
    # named inputs: a list of objects (row) and an object of tensors (columnar); the default signature by name
    body = {"signature_name": "serving_default", "instances": [{"input": 1.0}, {"input": 5.0}]}
    assert tf.post("/v1/models/half_plus_three:predict", json=body).json() == {"predictions": [3.5, 5.5]}
    body = {"inputs": {"input": [1.0, 5.0]}}
    assert tf.post("/v1/models/half_plus_three:predict", json=body).json() == {"outputs": [3.5, 5.5]}
    # JSON conformance: NaN and Infinity tokens are accepted, as TF Serving does
    r = tf.post("/v1/models/half_plus_three:predict", content=b'{"instances": [Infinity, 2.0]}')
    assert r.status_code == 200 and r.json()["predictions"][1] == 4.0
    # the same numbers as the V2 route and the registry's loader
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    tf_out = tf.post("/v1/models/tiny:predict", json={"instances": x.tolist()}).json()["predictions"]
    with httpx.Client(base_url=srv.url.replace("0.0.0.0", "127.0.0.1"), headers=srv.headers()) as v2:
        body = {"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}
        v2_out = v2.post("/v2/models/tiny/infer", json=body).json()["outputs"][0]["data"]
    assert np.asarray(tf_out, np.float32).ravel().tolist() == np.asarray(v2_out, np.float32).tolist()
    # the TF Serving port's requests are in the endpoint's access log too (flushed once a second)
    log = srv.home.resolve() / "serve" / f"{srv.url.rsplit(':', 1)[1]}.access.log"
    wanted = {"method": "POST", "path": "/v1/models/pairs:predict", "status": 200, "model": "pairs"}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        if any(wanted.items() <= line.items() for line in lines):
            break
        time.sleep(0.2)
    assert any(wanted.items() <= line.items() and line["bytes_in"] > 0 for line in lines), lines[-5:]


def test_errors_in_tf_servings_shape(tf, srv, home):
    def error(r, status: int, match: str) -> None:
        assert r.status_code == status, r.text
        doc = r.json()
        assert list(doc) == ["error"] and match in doc["error"] and "\n" not in doc["error"], doc

    both = {"instances": [1.0], "inputs": [1.0]}
    error(tf.post("/v1/models/half_plus_three:predict", json=both), 400, "not both")
    ragged = b'{"instances": [ [[1, 2]], [[3, 4, 5]] ]}'
    error(tf.post("/v1/models/pairs:predict", content=ragged), 400, "ragged")
    error(tf.post("/v1/models/pairs:predict", json={"instances": [[1, 2], [3, 4]]}), 400, "takes [1, 2]")
    error(tf.post("/v1/models/half_plus_three:predict", json={"instances": ["foo"]}), 400, "numbers")
    error(tf.post("/v1/models/half_plus_three:predict", json={"signature_name": "x", "instances": [1.0]}), 400, "x")
    error(tf.post("/v1/models/half_plus_three:predict", json={"examples": []}), 400, '"instances"')
    error(tf.post("/v1/models/half_plus_three:predict", content=b"{no"), 400, "not JSON")
    # the documentation's 404 example: a model that is not served
    error(tf.post("/v1/models/half:predict", content=b'{"instances": [1.0,5.0]}'), 404, "half")
    error(tf.get("/v1/models/half_plus_three/versions/9"), 404, "no loaded version")
    error(tf.post("/v1/models/half_plus_three:regress", json={"examples": [{"x": 1.0}]}), 501, ":predict")
    error(tf.get("/v1/models/half_plus_three:predict"), 405, "Method Not Allowed")
    # tokens as on the V2 routes
    error(httpx.post(srv.tf + "/v1/models/half_plus_three:predict", json={"instances": [1.0]}), 401, "bearer token")
    scoped = {"Authorization": f"Bearer {create_token('infer', models=['pairs'])}"}
    r = httpx.post(srv.tf + "/v1/models/half_plus_three:predict", json={"instances": [1.0]}, headers=scoped)
    error(r, 403, "scoped to pairs")
    assert httpx.get(srv.tf + "/v1/models/pairs", headers=scoped).status_code == 200


def test_endpoints_shows_the_tf_port_and_keeps_the_plain_http_warning(srv, home):
    ep = next(e for e in endpoints() if e.url == srv.url)
    assert ep.status["tf_serving_url"] == srv.tf.replace("127.0.0.1", "0.0.0.0")
    assert any("plain HTTP on 0.0.0.0" in p and "--insecure" in p for p in ep.problems())
    assert "plain HTTP on 0.0.0.0" in str(run("endpoints"))
