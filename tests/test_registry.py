"""The registry with in-memory models: publish -> load -> predict, tamper detection, aliases, audit, bad input."""

import functools
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from IPython.core.error import UsageError

from aios_lab import registry
from aios_lab.catalog import catalog
from aios_lab.compress.qmodel import QForward
from aios_lab.compress.quant import QTensor, compress_params
from aios_lab.errors import AiosError, Conflict, NotFound
from aios_lab.verbs import run

X = np.random.default_rng(0).standard_normal((7, 8, 8)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _mlp():
    from aios_lab.train.models import build, resolve

    spec = resolve("mlp", width=32)
    model = build(spec, "classification", 10, (8, 8))
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((2, 8, 8), np.float32))
    rng = np.random.default_rng(2)
    params = jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.3).astype(s.dtype), shapes)
    return spec, model, params


def publish(name="digits", params=None, **kw):
    spec, _, p = _mlp()
    return registry.publish_params(
        name, spec, p if params is None else params, task="classification", input_shape=(8, 8), n_outputs=10, **kw
    )


def audit(action=None):
    return [
        (r["action"], r["object"], json.loads(r["details"]))
        for r in catalog().query("SELECT * FROM audit ORDER BY id")
        if action in (None, r["action"])
    ]


def snapshot(home):
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if "catalog.sqlite" not in p.name)


def test_publish_load_predict_equals_the_in_memory_model(aios_home):
    spec, model, params = _mlp()
    mv = publish(metrics={"accuracy": np.float32(0.9)}, lineage={"dataset": "digits", "dataset_version": 1})
    assert (mv.name, mv.version) == ("digits", 1)
    path = aios_home / "models" / "digits" / "v1"
    assert mv.path == str(path)
    assert sorted(os.listdir(path)) == [
        "lineage.json",
        "manifest.json",
        "metrics.json",
        "model.json",
        "params.safetensors",
        "signature.json",
    ]
    assert all(os.stat(path / f).st_mode & 0o777 == 0o400 for f in os.listdir(path))  # read-only, private
    m = registry.load("digits")
    assert (m.name, m.version, m.path) == ("digits", 1, path)
    assert m.signature == {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 8, 8]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
    }
    assert m.metadata["metrics"] == {"accuracy": pytest.approx(0.9)}
    lin = m.metadata["lineage"]
    assert lin["dataset"] == "digits" and len(lin["code_hash"]) == 64 and lin["method"] is None
    assert m.metadata["spec"] == spec
    expected = np.asarray(model.apply(params, X))
    np.testing.assert_allclose(m.predict(X), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(m.forward(X[:3]), expected[:3], rtol=1e-6, atol=1e-6)  # server's entry, any batch
    np.testing.assert_allclose(m.predict(X[0]), expected[0], rtol=1e-6, atol=1e-6)  # one sample
    with pytest.raises(AiosError, match="shaped"):
        m.predict(np.zeros((2, 64), np.float32))


@pytest.mark.parametrize("method", ["int8", "int4", "prune:0.5+int8"])
def test_compressed_versions_run_compressed_and_match(method):
    spec, model, params = _mlp()
    q, info = compress_params(params, method)
    mv = publish("small", q, method=method)
    m = registry.load("small", mv.version)
    assert m.compressed and m.metadata["method"] == method and m.metadata["lineage"]["method"] == method
    assert isinstance(m.params["params"]["Dense_0"]["kernel"], QTensor)
    assert str(m.params["params"]["Dense_0"]["kernel"].data.dtype) in ("int8", "uint8")
    assert m.nbytes == info["bytes_after"] < info["bytes_before"] / 3
    np.testing.assert_array_equal(m.predict(X), QForward(model.apply, q)(X))


@pytest.mark.parametrize("damage", ["flip", "truncate", "extra", "manifest", "missing"])
def test_a_tampered_or_truncated_artifact_is_refused(aios_home, damage):
    publish()
    path = aios_home / "models" / "digits" / "v1"
    target = path / "params.safetensors"
    os.chmod(target, 0o644)
    raw = bytearray(target.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x01
        target.write_bytes(raw)
        msg = "params.safetensors has been modified"
    elif damage == "truncate":
        target.write_bytes(raw[:-100])
        msg = "params.safetensors is truncated"
    elif damage == "extra":
        (path / "evil.pkl").write_bytes(b"x")
        msg = "unexpected file"
    elif damage == "manifest":
        os.chmod(path / "manifest.json", 0o644)
        (path / "manifest.json").write_text((path / "manifest.json").read_text().replace('"model"', '"modell"'))
        msg = "manifest.json does not match"
    else:
        os.remove(path / "signature.json")
        msg = "signature.json is missing"
    with pytest.raises(AiosError, match=msg) as e:
        registry.load("digits")
    assert "\n" not in str(e.value) and "digits:v1" in str(e.value)
    assert not audit("load"), "a refused load is not a load"


def test_aliases_move_and_resolve_and_the_audit_log_records_it(aios_home):
    publish(alias="production")
    publish(alias="staging")
    assert registry.load("digits", "production").version == 1
    assert registry.load("digits", "staging").version == 2 and registry.load("digits").version == 2
    registry.promote("digits", "production", version=2)  # production is protected: promote moves it
    assert registry.load("digits", "production").version == 2
    assert {mv.version: mv.aliases for mv in registry.list_models()} == {1: [], 2: ["production", "staging"]}
    assert registry.load("digits", "v1").version == 1 and registry.load("digits", 1).version == 1
    for bad, msg in [("prod", "no alias 'prod'"), (3, "no version 3"), ("latest", None)]:
        if msg:
            with pytest.raises(AiosError, match=msg):
                registry.load("digits", bad)
    with pytest.raises(AiosError, match="reserved"):
        registry.set_alias("digits", "latest", 1)
    with pytest.raises(AiosError, match="no version 9"):
        registry.set_alias("digits", "production", 9)
    with pytest.raises(AiosError, match="no model named"):
        registry.load("nope")
    rows = audit()
    actions = [(a, o) for a, o, _ in rows]
    assert actions[:4] == [
        ("publish", "digits:v1"),
        ("alias", "digits@production"),
        ("publish", "digits:v2"),
        ("alias", "digits@staging"),
    ]
    moved = [d for a, o, d in rows if a == "alias" and d["previous"] == 1]
    assert moved and moved[0]["version"] == 2 and len(moved[0]["manifest_sha256"]) == 64
    loads = [d for a, _, d in rows if a == "load"]
    assert len(loads) == 6 and {d["requested"] for d in loads} >= {"production", "staging", None, "v1", "1"}
    assert all(r["user"] for r in catalog().query("SELECT user FROM audit"))


def test_delete_refuses_an_aliased_version_then_removes_files_and_row(aios_home):
    publish(alias="production")
    publish()
    with pytest.raises(Conflict, match="aliased as production"):
        registry.delete("digits", 1)
    with pytest.raises(Conflict, match="aliased as production"):
        registry.delete("digits")  # every version: all or nothing
    registry.promote("digits", "production", version=2)
    registry.delete("digits@1")
    assert [mv.version for mv in registry.list_models("digits")] == [2]
    assert not (aios_home / "models" / "digits" / "v1").exists()
    with pytest.raises(NotFound, match="version 1 of model 'digits' was deleted"):
        registry.load("digits", 1)
    assert publish().version == 3  # numbers are never reused
    registry.delete("digits", 3)
    assert publish().version == 4  # not even the newest one's
    assert [mv.ref for mv in registry.delete("digits", force=True)] == ["digits:v2", "digits:v4"]
    assert registry.list_models() == [] and not any((aios_home / "tmp").iterdir())
    deletes = [(o, d["force"]) for a, o, d in audit() if a == "delete"]
    assert deletes == [("digits:v1", False), ("digits:v3", False), ("digits:v2", True), ("digits:v4", True)]
    with pytest.raises(NotFound, match="no model named"):
        registry.delete("digits")


def test_killed_publisher_leaves_nothing_visible_and_is_swept(aios_home):
    code = (
        "import sys, time, aios_lab.atomic as atomic\n"
        f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from test_registry import publish\n"
        "def stall(tmp, read_only=False):\n"
        "    print('WROTE', flush=True); time.sleep(60)\n"
        "atomic.seal = stall\n"
        "publish()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env={**os.environ, "AIOS_HOME": str(aios_home)}
    )
    try:
        assert proc.stdout.readline().strip() == "WROTE"  # every file is written, in staging
        (staged,) = (aios_home / "tmp").iterdir()
        assert staged.name.startswith("model-digits-") and (staged / "params.safetensors").exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert registry.list_models() == [] and not (aios_home / "models").exists()
    assert publish().version == 1 and not any((aios_home / "tmp").iterdir())  # the dead writer's folder is gone


def test_nothing_under_aios_home_is_readable_by_others(aios_home):
    import aios_lab as aios

    old = os.umask(0o022)  # a usual login umask: aios must not rely on the user's
    try:
        aios.dataset("iris", "sklearn:iris")
        publish(alias="production")
        catalog().audit("probe", "x")  # the catalog is open: its -wal and -shm files exist now
    finally:
        os.umask(old)
    paths = [aios_home, *aios_home.rglob("*")]
    names = {p.name for p in paths}
    assert {"catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm", "v1", "params.safetensors"} <= names
    assert {"zarr.json", "datasets", "models"} <= names
    shared = [f"{p.relative_to(aios_home)} {oct(p.stat().st_mode & 0o777)}" for p in paths if p.stat().st_mode & 0o077]
    assert shared == []


def test_bad_input_gives_one_line_and_writes_nothing(aios_home):
    spec, _, params = _mlp()
    catalog()
    before = snapshot(aios_home)
    wrong = jax.tree.map(lambda a: a, params)
    wrong["params"]["Dense_0"] = {"kernel": np.zeros((3, 32), np.float32), "bias": np.zeros(32, np.float32)}
    cases = [
        lambda: publish("Bad Name"),
        lambda: publish("../escape"),
        lambda: publish(alias="7"),
        lambda: publish(alias="no spaces"),
        lambda: publish(params=wrong),
        lambda: publish(method="int3"),
        lambda: registry.publish_params(
            "m", {"kind": "builtin", "name": "mlp"}, params, task="ranking", input_shape=(8, 8), n_outputs=10
        ),
        lambda: publish(metrics={"x": object()}),
    ]
    for case in cases:
        with pytest.raises(AiosError) as e:
            case()
        assert "\n" not in str(e.value)
    assert snapshot(aios_home) == before
    assert catalog().query("SELECT * FROM models") == [] and audit() == []


def test_verbs_models_model_show_alias_and_audit(aios_home):
    publish(
        metrics={"accuracy": 0.97},
        lineage={"job": "j1", "checkpoint_step": 60, "dataset": "digits", "dataset_version": 1},
    )
    publish()
    text = str(run("models"))
    assert "digits" in text and "accuracy 0.97" in text and "j1@60" in text
    run("model alias digits production 1")
    show = str(run("model show digits production"))
    assert "digits:v1" in show and "production" in show and "FP32 [-1, 8, 8]" in show
    registry.load("digits", "production")
    log = str(run("audit --tail 3"))
    assert "load" in log and "digits:v1" in log and "alias" in log
    assert "publish" in str(run("audit --action publish"))
    with pytest.raises(UsageError, match="no model named"):
        run("model show nothing")
    run("model delete digits 2")
    assert [mv.version for mv in registry.list_models()] == [1]


def test_a_compressed_language_model_round_trips_with_an_int32_signature():
    from aios_lab.train.models import build, resolve

    spec = resolve("gpt", d_model=32, n_layers=1, n_heads=2)
    model = build(spec, "lm", 256, (16,))
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((2, 16), np.int32))
    rng = np.random.default_rng(3)
    params = jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.05).astype(s.dtype), shapes)
    q, info = compress_params(params, "int4")
    assert info["kept_float"] == [] and info["weight_ratio"] > 7
    registry.publish_params("tiny-gpt", spec, q, task="lm", input_shape=(16,), n_outputs=256, method="int4")
    m = registry.load("tiny-gpt")
    assert m.signature["inputs"][0] == {"name": "input", "datatype": "INT32", "shape": [-1, 16]}
    assert m.signature["outputs"][0]["shape"] == [-1, 16, 256]
    tokens = rng.integers(0, 256, size=(3, 16)).astype(np.int32)
    np.testing.assert_array_equal(m.predict(tokens), QForward(model.apply, q)(tokens))


def test_a_language_model_is_evaluated_and_listed_with_the_common_metric_names():
    from aios_lab.compress.evaluate import evaluate
    from aios_lab.train.models import build, resolve

    spec = resolve("gpt", d_model=32, n_layers=1, n_heads=2)
    model = build(spec, "lm", 256, (16,))
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((2, 16), np.int32))
    rng = np.random.default_rng(4)
    params = jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.05).astype(s.dtype), shapes)
    q, info = compress_params(params, "int8")
    tokens = rng.integers(0, 256, size=(6, 17)).astype(np.int32)
    rep = evaluate(model.apply, params, q, info, "lm", tokens[:, :-1], tokens[:, 1:], batch=6, repeats=1, split="val")
    assert rep.metric == "accuracy" and rep.split == "val"
    for ms in (rep.metrics_before, rep.metrics_after):
        assert set(ms) == {"loss", "accuracy", "perplexity"} and 0 <= ms["accuracy"] <= 1
        assert ms["perplexity"] == pytest.approx(np.exp(ms["loss"]))
    logits = np.asarray(model.apply(params, tokens[:, :-1]))
    assert rep.metrics_before["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == tokens[:, 1:]))
    assert "token_accuracy" not in json.dumps(rep.to_json()) and "perplexity" in str(rep)
    registry.publish_params("tiny-gpt", spec, q, task="lm", input_shape=(16,), n_outputs=256, metrics=rep.metrics_after)
    (row,) = run("models tiny-gpt").records()
    ppl = rep.metrics_after["perplexity"]
    assert row["metric"] == f"accuracy {rep.metrics_after['accuracy']:.4g}, perplexity {ppl:.4g}"
