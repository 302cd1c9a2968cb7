"""``aios export``: KServe and JobSet files, checked offline against the schemas a cluster would use, and the
commands their containers run, run here.

Core Kubernetes objects are validated with ``kubernetes-validate`` (strict: unknown fields refused); the
custom resources against their CRDs' OpenAPI schemas (``tests/fixtures/k8s``, see its README), made strict
the same way. No cluster and no Docker daemon run here: the KServe container's command is run from the
build context on this machine, and the JobSet's pod command as two local processes.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema
import kubernetes_validate
import numpy as np
import pytest
import yaml
from IPython.core.error import UsageError
from test_serve_support import publish_tiny

from aios_lab import verbs
from aios_lab.procs import free_port

SCHEMAS = Path(__file__).parent / "fixtures" / "k8s"
K8S = kubernetes_validate.utils.latest_version()
X = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)


def strict(schema):
    """A CRD schema that refuses unknown fields, as ``kubectl apply --validate=strict`` does."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in schema:
        out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            out[key] = strict(schema[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            out[key] = [strict(s) for s in schema[key]]
    return out


def crd_valid(doc: dict, schema_file: str) -> None:
    schema = strict(json.loads(gzip.decompress((SCHEMAS / schema_file).read_bytes())))
    jsonschema.Draft7Validator(schema).validate(doc)


def k8s_valid(doc: dict) -> None:
    kubernetes_validate.validate(doc, K8S, strict=True)


def f32(values) -> list:
    return np.asarray(values, np.float32).ravel().tolist()


# -- KServe -------------------------------------------------------------------------------------


def test_kserve_export_validates_and_its_container_serves_tritonclient(aios_home, tmp_path):
    import tritonclient.http as tc

    from aios_lab import registry

    publish_tiny("tiny", seed=0, alias=None)
    mv = publish_tiny("tiny", seed=3, alias="production")  # v2 carries the alias: what a bare name exports
    out = str(verbs.run(f"export tiny --to kserve {tmp_path / 'ks'}"))
    assert "exported tiny:v2" in out and "InferenceService tiny" in out
    d = tmp_path / "ks"
    runtime, isvc = yaml.safe_load_all((d / "inferenceservice.yaml").read_text())
    crd_valid(runtime, "kserve-servingruntime-v1alpha1.schema.json.gz")
    crd_valid(isvc, "kserve-inferenceservice-v1beta1.schema.json.gz")
    container = runtime["spec"]["containers"][0]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": runtime["metadata"], "spec": runtime["spec"]}
    k8s_valid({**pod, "spec": {"containers": [container], "volumes": runtime["spec"]["volumes"]}})
    assert (
        runtime["spec"]["protocolVersions"] == ["v2"] and isvc["spec"]["predictor"]["model"]["protocolVersion"] == "v2"
    )
    assert isvc["spec"]["predictor"]["model"]["runtime"] == runtime["metadata"]["name"] == "tiny-v2"
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    docker = (d / "Dockerfile").read_text()
    assert 'pip install --no-cache-dir "$AIOS_LAB"' in docker
    assert "COPY --chown=aios:aios model/ /opt/aios/model/" in docker and "artifact.json /opt/aios/" in docker
    assert "What was and was not exercised" in (d / "README.md").read_text()
    manifest = json.loads((d / "model" / "manifest.json").read_text())["files"]
    assert sorted(p.name for p in (d / "model").iterdir()) == sorted([*manifest, "manifest.json"])
    assert json.loads((d / "artifact.json").read_text())["manifest_sha256"] == mv.manifest_sha256

    # the container's command, from the build context, with no catalog anywhere
    token = "aios_" + "k" * 43
    (tmp_path / "tokens").write_text(token + "\n")
    env = {
        **os.environ,
        "AIOS_HOME": "/dev/null/no-catalog-in-a-container",
        "AIOS_TOKEN_FILE": str(tmp_path / "tokens"),
    }
    port = free_port()
    cmd = [sys.executable, "-m", "aios_lab.export.artifact_server", str(d), "--host", "127.0.0.1"]
    proc = subprocess.Popen([*cmd, "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while not _ready(url):
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the container's server never became ready"
            time.sleep(0.2)
        client = tc.InferenceServerClient(f"127.0.0.1:{port}")
        auth = lambda: {"Authorization": f"Bearer {token}"}  # tritonclient adds to the dict it gets
        expected = f32(registry.load("tiny", 2, audit=False).predict(X))
        for binary in (False, True):
            inp = tc.InferInput("input", [3, 4], "FP32")
            inp.set_data_from_numpy(X, binary_data=binary)
            out = tc.InferRequestedOutput("logits", binary_data=binary)
            r = client.infer("tiny", [inp], outputs=[out], headers=auth())
            assert f32(r.as_numpy("logits")) == expected and r.get_response()["model_version"] == "2"
        client.close()
        assert httpx.get(f"{url}/v2/models/tiny").status_code == 401
        assert httpx.get(f"{url}/metrics", headers=auth()).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)  # uvicorn drains, then ends by the signal it caught
        code = proc.wait(60)
    assert code == -signal.SIGTERM, proc.stdout.read().decode()[-2000:]
    del env["AIOS_TOKEN_FILE"]
    refused = subprocess.run([*cmd, "--port", str(port)], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "no bearer token: set AIOS_TOKEN_FILE" in refused.stderr


def test_the_container_does_not_start_on_a_tampered_artifact(aios_home, tmp_path):
    publish_tiny("tiny", seed=0)
    verbs.run(f"export tiny --to kserve {tmp_path / 'ks'}")
    params = tmp_path / "ks" / "model" / "params.safetensors"
    params.write_bytes(params.read_bytes()[:-4] + b"\1\2\3\4")  # after the export: a changed image layer
    env = {**os.environ, "AIOS_HOME": "/dev/null/no-catalog-in-a-container", "AIOS_TOKEN": "aios_" + "t" * 43}
    cmd = [sys.executable, "-m", "aios_lab.export.artifact_server", str(tmp_path / "ks"), "--host", "127.0.0.1"]
    run = subprocess.run([*cmd, "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode != 0 and "params.safetensors has been modified" in run.stdout + run.stderr


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_tampered_version_is_not_exported_and_nothing_is_written(aios_home, tmp_path):
    mv = publish_tiny("tiny", seed=0)
    params = Path(mv.path) / "params.safetensors"
    params.chmod(0o600)
    with params.open("r+b") as f:
        f.seek(-4, 2)
        f.write(b"\1\2\3\4")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UsageError, match=r"tiny:v1 .* failed verification: params.safetensors has been modified"):
        verbs.run(f"export tiny:1 --to kserve {out / 'ks'}")
    assert list(out.iterdir()) == [], "no folder, not even a half-written one"


def test_bad_export_requests_are_one_line_and_write_nothing(aios_home, tmp_path):
    publish_tiny("tiny", seed=0)
    tmp_path = tmp_path / "out"
    busy = tmp_path / "busy"
    busy.mkdir(parents=True)
    (busy / "x").write_text("keep me")
    cases = [
        (f"export tiny --to kserve {busy}", "exists and is not an empty folder"),
        (f"export nope --to kserve {tmp_path / 'a'}", "no model named 'nope' in the registry"),
        (f"export tiny:staging --to kserve {tmp_path / 'a'}", "model 'tiny' has no alias 'staging'"),
        (f"export tiny --to kserve {tmp_path / 'a'} --pods 2", "--pods do not apply to --to kserve"),
        (f"export tiny --to kserve {tmp_path / 'a'} --name Bad_Name", "--name 'Bad_Name' is not a Kubernetes name"),
        (f"export nojob --to jobset {tmp_path / 'a'}", "no job named 'nojob'"),
        (f"export tiny --to kserve {tmp_path / 'no' / 'parent'}", "does not exist; create it or export somewhere else"),
    ]
    for line, message in cases:
        with pytest.raises(UsageError, match=message) as err:
            verbs.run(line)
        assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"] and (busy / "x").read_text() == "keep me"


# -- JobSet -------------------------------------------------------------------------------------


def test_jobset_export_validates_and_its_pods_train_the_job(aios_home, tmp_path):
    import aios_lab as aios
    from aios_lab.train.checkpoints import Checkpoints

    ds = aios.dataset("digits", "sklearn:digits")
    steps = dict(model="mlp", batch=64, steps=20, checkpoint_every=10, eval_every=10, lr=3e-3, devices=8)
    local = aios.train("small", dataset="digits", **steps)
    assert local.wait(timeout=600) == "succeeded", local.log_tail()
    ckpt = tmp_path / "ckpt"
    line = f"export small --to jobset {tmp_path / 'js'} --pods 2 --dataset-uri {ds.path} --checkpoint-dir {ckpt}"
    assert "JobSet small, 2 pods x 4 cpu devices" in str(verbs.run(line))
    d = tmp_path / "js"
    docs = list(yaml.safe_load_all((d / "jobset.yaml").read_text()))
    assert [x["kind"] for x in docs] == ["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "JobSet"]
    for doc in docs[:4]:
        k8s_valid(doc)
    jobset = docs[-1]
    crd_valid(jobset, "jobset-v1alpha2.schema.json.gz")
    rjob = jobset["spec"]["replicatedJobs"][0]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "small-workers-0"},
        "spec": rjob["template"]["spec"],
    }
    k8s_valid(job)
    spec = rjob["template"]["spec"]
    assert (rjob["replicas"], spec["parallelism"], spec["completions"], spec["completionMode"]) == (1, 2, 2, "Indexed")
    worker = spec["template"]["spec"]["containers"][0]
    assert worker["ports"] == [{"name": "jax-coord", "containerPort": 55527, "protocol": "TCP"}]
    assert {"name": "XLA_FLAGS", "value": "--xla_force_host_platform_device_count=4"} in worker["env"]
    document = json.loads((d / "job.json").read_text())
    assert json.loads(docs[3]["data"]["job.json"]) == document and document["train"]["num_processes"] == 2
    assert "JOB_COMPLETION_INDEX" in (d / "README.md").read_text() and "jax[k8s]" in (d / "Dockerfile").read_text()

    # what each pod runs, as two processes here (the coordinator given by hand instead of found by JAX)
    coordinator = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    env["AIOS_HOME"] = "/dev/null/no-catalog-in-a-pod"
    cmd = [sys.executable, "-m", "aios_lab.export.pod_worker", "--config", str(d / "job.json")]
    procs = [
        subprocess.Popen(
            [*cmd, "--coordinator", coordinator, "--processes", "2", "--process-id", str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    rows = [json.loads(x) for x in outs[0].splitlines() if x.startswith("{")]
    assert rows[-1]["summary"]["step"] == 20
    pods = {r["step"]: r for r in rows if r.get("split") == "val"}
    here = {r["step"]: r for r in local.metrics() if r.get("split") == "val"}
    assert sorted(pods) == sorted(here) == [10, 20]
    for step in pods:  # 2 processes x 4 devices follow the curve of 1 process x 8 devices
        assert np.isclose(pods[step]["loss"], here[step]["loss"], rtol=1e-3), (step, pods[step], here[step])
    with Checkpoints(ckpt, read_only=True) as ckpts:
        assert ckpts.latest_step() == 20
