"""Compression and publishing of real training jobs: %aios compress / publish, variants, lineage, bad input."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from IPython.core.error import UsageError

import aios_lab as aios
from aios_lab.catalog import catalog
from aios_lab.compress.qmodel import QForward
from aios_lab.errors import AiosError
from aios_lab.verbs import run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One AIOS_HOME with a trained mlp job ("mlp") and a job that never got a checkpoint ("empty")."""
    home = tmp_path_factory.mktemp("compress") / "aios"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIOS_HOME", str(home))
        aios.dataset("digits", "sklearn:digits", seed=0)
        job = aios.train(
            "mlp",
            dataset="digits",
            model="mlp",
            devices=1,
            batch=64,
            steps=80,
            checkpoint_every=40,
            eval_every=40,
            lr=3e-3,
        )
        empty = aios.train("empty", dataset="digits", model="mlp", devices=8, steps=10)  # waits for 8 devices
        assert empty.state == "queued"
        empty.cancel()
        assert job.wait(timeout=240) == "succeeded", job.log_tail()
        assert aios.job("empty").state == "cancelled" and aios.job("empty").checkpoints() == []
    return home


@pytest.fixture
def home(trained, monkeypatch):
    monkeypatch.setenv("AIOS_HOME", str(trained))
    return trained


def snapshot(home):
    files = sorted(str(p.relative_to(home)) for p in (home / "jobs").rglob("variants/**/*"))
    files += sorted(str(p.relative_to(home)) for p in home.glob("models/**/*"))
    db = [tuple(r) for t in ("variants", "models", "aliases") for r in catalog().query(f"SELECT * FROM {t}")]
    return files, db


def test_compress_verb_evaluates_and_keeps_the_variant(home):
    rep = run("compress mlp --method int8")
    job = aios.job("mlp")
    assert (rep.job, rep.checkpoint_step, rep.method, rep.variant) == ("mlp", 80, "int8", "int8")
    assert rep.weight_ratio >= 3.9 and rep.ratio > 3.8
    assert rep.metric == "accuracy" and rep.metric_before > 0.8 and abs(rep.delta) <= 0.02
    assert 0 < rep.max_abs_logit_diff < 1 and rep.forward_s_before > 0 and rep.forward_s_after > 0
    assert "val" in rep.eval
    text = str(rep)
    for needle in ("bytes (all parameters)", "accuracy", "max |logit difference|", "forward per batch"):
        assert needle in text
    row = catalog().one("SELECT * FROM variants WHERE job='mlp' AND variant='int8'")
    assert row["method"] == "int8" and row["checkpoint_step"] == 80
    path = home / "jobs" / "mlp" / "variants" / "int8"
    assert row["path"] == str(path) and sorted(os.listdir(path)) == ["params.safetensors", "report.json"]
    assert json.loads(row["report"])["metric_after"] == rep.metric_after
    assert rep.split == "val" and set(rep.metrics_after) == {"loss", "accuracy"}
    assert rep.metrics_after["accuracy"] == rep.metric_after and rep.metrics_after["loss"] > 0
    assert [oct(p.stat().st_mode & 0o777) for p in (path, path / "report.json", path / "params.safetensors")] == [
        "0o700",
        "0o400",
        "0o400",
    ]

    rep2 = aios.compress("mlp", "prune:0.5+int4", eval="test", checkpoint=40)
    assert rep2.variant == "prune-0.5-int4" and rep2.checkpoint_step == 40 and "test" in rep2.eval
    assert rep2.ratio > rep.ratio
    best = aios.compress(job, "bf16", checkpoint="best", eval="digits:train")
    assert (
        best.checkpoint_step in job.checkpoints()
        and "train" in best.eval
        and best.weight_ratio == pytest.approx(2, 0.01)
    )
    from aios_lab.compress import variants

    names = {r["variant"] for r in variants("mlp")}
    assert {"int8", "prune-0.5-int4", "bf16"} <= names
    again = aios.compress("mlp", "int8", checkpoint=40)  # made again: replaces the variant whole
    (row,) = [r for r in variants("mlp") if r["variant"] == "int8"]
    assert row["checkpoint_step"] == 40 and row["report"]["created"] == again.created
    assert aios.compress("mlp", "int8").checkpoint_step == 80 and not any((home / "tmp").iterdir())


def test_publish_variant_and_checkpoint_then_load_predicts_the_same(home):
    if not catalog().one("SELECT 1 FROM variants WHERE job='mlp' AND variant='int8'"):
        aios.compress("mlp", "int8")
    from aios_lab.compress import variant
    from aios_lab.data import get
    from aios_lab.train.models import build

    x, _ = get("digits").load("test")
    job = aios.job("mlp")
    mv = run("publish mlp --variant int8 --as digits --alias production")
    assert mv.lineage["job"] == "mlp" and mv.lineage["checkpoint_step"] == 80 and mv.lineage["method"] == "int8"
    assert mv.lineage["dataset"] == "digits" and mv.lineage["dataset_version"] == 1 and mv.lineage["code_hash"]
    assert mv.metrics["accuracy"] > 0.8 and mv.aliases == ["production"]
    assert mv.metrics["split"] == "val" and mv.metrics["loss"] > 0 and "accuracy_uncompressed" in mv.metrics
    m = aios.registry.load("digits", "production")
    qparams, meta = variant("mlp", "int8")
    assert meta["checkpoint_step"] == 80 and meta["method"] == "int8" and meta["report"]["variant"] == "int8"
    model = build(job.config["train"]["model"], "classification", 10, (8, 8))
    np.testing.assert_array_equal(m.predict(x), QForward(model.apply, qparams)(x))
    assert m.compressed

    mv2 = aios.publish("mlp", checkpoint=40, as_="digits")
    assert mv2.version == mv.version + 1 and mv2.lineage["checkpoint_step"] == 40 and mv2.lineage["method"] is None
    m2 = aios.registry.load("digits", mv2.version)
    np.testing.assert_allclose(m2.predict(x), np.asarray(model.apply(job.params(40), x)), rtol=1e-5, atol=1e-5)
    assert not m2.compressed
    publishes = [r for r in catalog().query("SELECT * FROM audit WHERE action='publish'")]
    assert publishes[-1]["object"] == f"digits:v{mv2.version}"


def test_killed_compress_leaves_no_variant_and_is_swept(home):
    code = (
        "import time, aios_lab as aios\n"
        "from aios_lab.compress import params_file\n"
        "real = params_file.save_tree\n"
        "def slow(*a, **k):\n"
        "    real(*a, **k); print('WROTE', flush=True); time.sleep(60)\n"
        "params_file.save_tree = slow\n"
        "aios.compress('mlp', 'prune:0.25')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env={**os.environ, "AIOS_HOME": str(home)}
    )
    try:
        assert proc.stdout.readline().strip() == "WROTE"  # the parameters are on disk, in staging
        assert [p.name.startswith("variant-mlp-") for p in (home / "tmp").iterdir()] == [True]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    from aios_lab.compress import variants

    assert "prune-0.25" not in {r["variant"] for r in variants("mlp")}
    assert not (home / "jobs" / "mlp" / "variants" / "prune-0.25").exists()
    rep = aios.compress("mlp", "prune:0.25")
    assert rep.variant == "prune-0.25" and (home / "jobs" / "mlp" / "variants" / "prune-0.25").is_dir()
    assert not any((home / "tmp").iterdir())  # the dead writer's folder is gone


def test_a_dataset_in_a_models_lineage_or_under_a_job_is_not_deleted(home):
    from aios_lab.errors import Conflict

    if not catalog().one("SELECT 1 FROM models WHERE name='digits'"):
        aios.publish("mlp", as_="digits")
    before = snapshot(home)
    with pytest.raises(Conflict, match=r"digits:v1 is the lineage of model digits:v1.*--force") as e:
        aios.delete_dataset("digits")
    assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match="lineage"):
        run("dataset delete digits@1")
    assert snapshot(home) == before and aios.datasets("digits")[0].version == 1


@pytest.mark.parametrize(
    "line,msg",
    [
        ("compress mlp --method int3", "unknown compression method"),
        ("compress mlp --method prune:0", "strictly between 0 and 1"),
        ("compress mlp --method prune:1.5", "strictly between 0 and 1"),
        ("compress mlp --method int8 --checkpoint 7", "no checkpoint at step 7"),
        ("compress mlp --method int8 --checkpoint soon", "best, latest or a step"),
        ("compress mlp --method int8 --eval nosuchset", "no dataset"),
        ("compress empty --method int8", "no checkpoint yet"),
        ("compress ghost --method int8", "no job named"),
        ("publish empty --as digits", "no checkpoint yet"),
        ("publish mlp --checkpoint 13 --as digits", "no checkpoint at step 13"),
        ("publish mlp --variant int2 --as digits", "no variant"),
        ("publish mlp --as Digits", "invalid model name"),
        ("publish mlp --as digits --alias 3", "reserved"),
        ("publish mlp", "--as"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(home, line, msg):
    before = snapshot(home)
    with pytest.raises(UsageError) as e:
        run(line)
    assert msg in str(e.value) and "\n" not in str(e.value)
    assert snapshot(home) == before


def test_python_twins_raise_aios_errors(home):
    with pytest.raises(AiosError, match="no checkpoint yet"):
        aios.publish("empty", as_="x")
    with pytest.raises(AiosError, match="strictly between"):
        aios.compress("mlp", "prune:1")
    with pytest.raises(AiosError, match="--as MODEL"):
        aios.publish("mlp")
