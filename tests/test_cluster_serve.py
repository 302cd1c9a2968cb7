"""The V2 server as a Ray Serve deployment on a real two-node Ray cluster (loopback only, token auth on).

One cluster and one 2-replica deployment serve the module (``ray_cluster.RayCluster``); the cluster is
stopped at the end whatever happens. The replicas run with ``AIOS_HOME`` pointing nowhere: they read
models only by their registry paths (verified against the manifests) and tokens only as hashes sent
by the driver. The first tests need no cluster: what is refused before anything starts, the serve
document, the merged metrics and the catalog-free loader.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np
import orjson
import pytest
from ray_cluster import RayCluster
from test_serve_support import aios_home, publish_tiny

from aios_lab import verbs
from aios_lab.cluster import target
from aios_lab.cluster.ray_support import require_ray
from aios_lab.cluster.serve_driver import document
from aios_lab.cluster.serve_metrics import merge
from aios_lab.cluster.serve_source import DocumentSource
from aios_lab.errors import AiosError

pytestmark = pytest.mark.timeout(600)

X = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)
BODY = orjson.dumps({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": X.ravel().tolist()}]})
PORT = 8500


def f32(values) -> list:
    return np.asarray(values, np.float32).ravel().tolist()


def predict(version: int) -> list:
    from aios_lab import registry

    return f32(registry.load("tiny", version, audit=False).predict(X))


# -- refused before anything starts (no cluster needed) ----------------------------------------


def _no_rows():
    from aios_lab.catalog import catalog

    return catalog().query("SELECT url FROM endpoints") == []


def test_serve_on_ray_without_a_cluster_is_one_line_and_starts_nothing(aios_home):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match=r"^no Ray cluster connected; `%aios cluster connect HOST:PORT` first$"):
        verbs.run("serve --on ray --replicas 2")
    assert _no_rows()


def test_bad_replicas_and_unknown_models_are_refused_before_anything_starts(aios_home):
    import aios_lab as aios

    target.save(target.Target("127.0.0.1:1", "none", require_ray(), time.time()), None, {"nodes": []})
    with pytest.raises(AiosError, match="--replicas must be a whole number from 1 to 1024, not 0"):
        aios.serve(on="ray", replicas=0)
    with pytest.raises(AiosError, match="--replicas needs --on ray"):
        aios.serve(replicas=2)
    with pytest.raises(AiosError, match="--on 'k8s'"):
        aios.serve(on="k8s")
    with pytest.raises(AiosError, match="no model named 'nope' in the registry"):
        aios.serve(on="ray", replicas=2, models=["nope"])
    with pytest.raises(AiosError, match="serving on 0.0.0.0 without TLS would send tokens and data unencrypted"):
        aios.serve(on="ray", host="0.0.0.0")  # the proxy would listen on every interface in plain HTTP
    target.save(target.Target("10.1.2.3:6379", "none", require_ray(), time.time()), None, {"nodes": []})
    with pytest.raises(AiosError, match="serving on 10.1.2.3 without TLS"):
        aios.serve(on="ray")  # a loopback --host means the head's own address, here not loopback
    target.save(target.Target("127.0.0.1:1", "none", require_ray(), time.time()), None, {"nodes": []})
    publish_tiny("tiny", seed=0)
    with pytest.raises(AiosError, match="model 'tiny' has no alias 'staging'"):
        aios.serve(on="ray", models=["tiny@staging"])
    assert _no_rows()


def test_the_serve_document_holds_paths_manifests_aliases_and_live_token_hashes(aios_home):
    import hashlib

    from aios_lab.serve import create_token, revoke_token, tokens

    v1 = publish_tiny("tiny", seed=0)
    publish_tiny("tiny", seed=1, alias=None)
    keep, gone = create_token("infer"), create_token("admin")
    revoke_token(tokens()[-1].id)
    doc = document(None)
    assert doc["models"]["tiny"]["follow"] is None and doc["models"]["tiny"]["aliases"] == {"production": 1}
    assert doc["models"]["tiny"]["versions"]["1"] == {"path": v1.path, "manifest_sha256": v1.manifest_sha256}
    sha = lambda t: hashlib.sha256(t.encode()).hexdigest()
    assert sha(keep) in doc["tokens"] and sha(gone) not in doc["tokens"]
    assert document(("tiny@2",))["models"]["tiny"]["follow"] == 2
    source = DocumentSource(doc)
    assert source.resolve("tiny", None) == 2 and source.resolve("tiny", "production") == 1
    assert source.token_lookup(keep) == ("infer", "", None) and source.token_lookup(gone)[0] is None


def test_a_replica_refuses_a_tampered_artifact(aios_home):
    import os

    mv = publish_tiny("tiny", seed=0)
    source = DocumentSource(document(None))
    assert source.load("tiny", 1).predict(X).shape == (2, 3)
    params = os.path.join(mv.path, "params.safetensors")
    os.chmod(params, 0o600)
    with open(params, "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\0\0\1")
    with pytest.raises(AiosError, match=r"tiny:v1 .* failed verification: params.safetensors has been modified"):
        source.load("tiny", 1)


def test_metrics_of_replicas_add_up():
    a = '# TYPE r_total counter\nr_total{m="t"} 2.0\n# TYPE r_created gauge\nr_created{m="t"} 5.0\n'
    b = '# TYPE r_total counter\nr_total{m="t"} 3.0\nr_total{m="u"} 1.0\n# TYPE r_created gauge\nr_created{m="t"} 4.0\n'
    text = merge([a, b]).decode()
    assert 'r_total{m="t"} 5.0' in text and 'r_total{m="u"} 1.0' in text and 'r_created{m="t"} 4.0' in text


def test_the_row_status_sums_the_replicas_and_forgets_replaced_ones():
    from aios_lab.cluster.serve_driver import Status

    now = time.time()

    def report(age, requests, served, failure=None):
        model = {"requests": requests, "errors": 1, "rejected": 0, "swap_failure": failure, "load_failure": None}
        status = {"ready": True, "requests": requests + 2, "errors": 1, "rejected": 0, "served": served}
        return {"received": now - age, "status": {**status, "models": {"tiny": model}, "node_id": "n"}}

    reports = {
        "a": report(1, 10, {"tiny": ["2", "production"]}),
        "b": report(2, 5, {"tiny": ["2", "production"]}),
        "old": report(120, 7, {"tiny": ["1"]}, failure={"reason": "stale"}),  # replaced by Serve long ago
    }
    doc, served = Status(2, "h:1", 2.0).build(reports)
    assert doc["ready"] and doc["replicas"]["ready"] == 2
    assert [r["replica"] for r in doc["replicas"]["each"]] == ["a", "b"]
    assert doc["requests"] == 28 and doc["models"]["tiny"]["requests"] == 22 and doc["errors"] == 3
    assert doc["models"]["tiny"]["swap_failure"] is None and served == {"tiny": ["2", "production"]}
    del reports["b"]
    doc, _ = Status(2, "h:1", 2.0).build(reports)
    assert not doc["ready"], "one of two replicas is not enough"


# -- on a real cluster ------------------------------------------------------------------------


class Deployment:
    """The module's deployment: its endpoint, tokens and AIOS_HOME."""

    def __init__(self, ep, home, admin: str, infer: str):
        self.ep, self.home, self.admin, self.infer = ep, home, admin, infer
        self.url, self.hostport = ep.url, ep.url.removeprefix("http://")

    def headers(self, role: str = "infer") -> dict:
        return {"Authorization": f"Bearer {self.admin if role == 'admin' else self.infer}"}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    home = tmp_path_factory.mktemp("ray-serve")
    with RayCluster(hosts=2, cpus=2, devices=4) as cluster, cluster.inside(), aios_home(home):
        from aios_lab.serve import create_token

        t = target.Target(cluster.address, "token", require_ray(), time.time())
        target.save(t, cluster.token_path.read_text(), {"nodes": []})
        publish_tiny("tiny", seed=0)
        infer = create_token("infer")
        out = verbs.run(f"serve --on ray --replicas 2 --port {PORT}")
        assert "Ray Serve, 2 replicas" in str(out), out
        from aios_lab.serve import endpoints

        ep = next(e for e in endpoints() if e.port == PORT)
        d = Deployment(ep, home, (home / "serve" / "token").read_text().strip(), infer)
        try:
            yield d
        finally:
            if d.ep.alive():
                d.ep.stop(timeout=120)


@pytest.fixture
def home(deployed, monkeypatch):
    monkeypatch.setenv("AIOS_HOME", str(deployed.home))
    return deployed.home


def _replicas(port: int = PORT) -> list[dict]:
    from aios_lab.serve import endpoints

    ep = next(e for e in endpoints() if e.port == port)
    return (ep.status or {}).get("replicas", {}).get("each", [])


def _wait(what, check, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_two_replicas_on_two_nodes_answer_tritonclient_json_and_binary(deployed, home):
    import tritonclient.http as tc

    table = str(verbs.run("endpoints"))
    assert "ray-serve 2/2" in table and deployed.url in table and "tiny (1, production)" in table
    replicas = _replicas()
    assert len(replicas) == 2 and all(r["ready"] for r in replicas)
    assert len({r["node_id"] for r in replicas}) == 2, "the replicas run on both Ray nodes"
    expected = predict(1)
    client = tc.InferenceServerClient(deployed.hostport)
    try:
        assert client.is_server_ready() and client.is_model_ready("tiny", headers=deployed.headers())
        assert client.get_model_metadata("tiny", headers=deployed.headers())["versions"] == ["1", "production"]
        for _ in range(6):  # enough calls to reach both replicas
            for binary in (False, True):
                inp = tc.InferInput("input", [2, 4], "FP32")
                inp.set_data_from_numpy(X, binary_data=binary)
                out = tc.InferRequestedOutput("logits", binary_data=binary)
                r = client.infer("tiny", [inp], outputs=[out], headers=deployed.headers())
                assert f32(r.as_numpy("logits")) == expected and r.get_response()["model_version"] == "1"
    finally:
        client.close()
    with httpx.Client(base_url=deployed.url, headers=deployed.headers(), timeout=30) as c:
        _wait("both replicas' counters in one exposition", lambda: _infers(c.get("/metrics").text) >= 12)
        r = c.post("/v2/repository/models/tiny/unload", headers=deployed.headers("admin"))
        assert r.status_code == 501 and "models follow the registry" in r.json()["error"]


def _infers(metrics: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        s.value
        for fam in text_string_to_metric_families(metrics)
        for s in fam.samples
        if s.name == "aios_serve_requests_total" and s.labels["route"] == "infer" and s.labels["status"] == "200"
    )


def test_tokens_are_checked_on_every_replica(deployed, home):
    from aios_lab.serve import create_token, revoke_token, tokens

    with httpx.Client(base_url=deployed.url, timeout=30) as c:
        assert c.get("/v2/health/ready").status_code == 200  # health needs no token
        for _ in range(4):
            r = c.post("/v2/models/tiny/infer", content=BODY)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert c.get("/metrics").status_code == 401
            assert c.get("/v2/models/tiny", headers={"Authorization": "Bearer aios_not-a-token"}).status_code == 401
        fresh = create_token("infer", label="made while serving")
        auth = {"Authorization": f"Bearer {fresh}"}
        _wait("a new token to reach both replicas", lambda: all(_ok(c, auth) for _ in range(6)))
        revoke_token(next(t.id for t in tokens() if t.label == "made while serving"))
        _wait("a revocation to reach both replicas", lambda: not any(_ok(c, auth) for _ in range(6)))


def _ok(c: httpx.Client, headers: dict) -> bool:
    return c.post("/v2/models/tiny/infer", content=BODY, headers=headers).status_code == 200


def test_a_hot_swap_under_load_fails_no_request_and_reaches_every_replica(deployed, home):
    v1 = predict(1)
    results, errors, stop = [], [], threading.Event()

    def load():
        with httpx.Client(base_url=deployed.url, headers=deployed.headers(), timeout=60) as c:
            while not stop.is_set():
                try:
                    sent = time.monotonic()
                    r = c.post("/v2/models/tiny/infer", content=BODY)
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                    continue
                body = r.json()
                results.append((sent, body["model_version"], f32(body["outputs"][0]["data"])))

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        _wait("traffic", lambda: len(results) > 10)
        from aios_lab.registry.promote import promote

        publish_tiny("tiny", seed=5, alias=None)
        promote("tiny", "production", version=2)  # the alias moves to v2: every replica follows
        v2 = predict(2)
        assert v1 != v2
        on_both = lambda: all(r["models"].get("tiny") == ["2", "production"] for r in _replicas())
        _wait("both replicas to serve v2", lambda: len(_replicas()) == 2 and on_both())
        swapped, n = time.monotonic(), len(results)
        _wait("traffic after the swap", lambda: len(results) > n + 20)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors[:5]
    versions = [v for _, v, _ in results]
    assert "1" in versions and "2" in versions
    for _, v, out in results:
        assert out == (v1 if v == "1" else v2)  # each answer is exactly its version's
    late = {v for sent, v, _ in results if sent > swapped}
    assert late == {"2"}, "a request sent after both replicas reported v2 was answered by v1"


def test_stop_deletes_the_deployment_and_ends_the_row(deployed, home):
    from aios_lab.catalog import catalog

    out = str(verbs.run(f"serve stop --port {PORT}"))
    assert f"stopped {deployed.url}" in out
    row = catalog().one("SELECT state, kind, status FROM endpoints WHERE port = ?", (PORT,))
    assert row["state"] == "stopped" and row["kind"] == "ray-serve" and json.loads(row["status"])["ready"] is False
    with pytest.raises(httpx.HTTPError):
        httpx.get(deployed.url + "/v2/health/ready", timeout=5).raise_for_status()
    actions = [
        r["action"] for r in catalog().query("SELECT action FROM audit WHERE object = ? ORDER BY id", (deployed.url,))
    ]
    assert actions[0] == "serve.start" and "serve.follow" in actions and actions[-1] == "serve.stop"
