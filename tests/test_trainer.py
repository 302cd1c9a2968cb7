"""The training loop: config round trip, metrics rows, stop + resume bitwise, NaN keeps the last good checkpoint."""

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits

from aios_lab.errors import AiosError
from aios_lab.train.arrays import ArrayDataset, ArrayLoader
from aios_lab.train.checkpoints import Checkpoints, load_params
from aios_lab.train.trainer import TrainConfig, TrainingDiverged, train


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x, y = (d.data / 16).astype(np.float32), d.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return ArrayDataset({"train": (x[:1400], y[:1400]), "val": (x[1400:], y[1400:])})


def _cfg(**kw):
    base = dict(
        model={"kind": "builtin", "name": "mlp", "config": {"width": 64}},
        n_devices=8,
        steps=40,
        batch=64,
        lr=3e-3,
        checkpoint_every=10,
        eval_every=20,
        warmup=5,
        weight_decay=1e-4,
    )
    return TrainConfig(**{**base, **kw})


def test_config_json_round_trip_and_validation():
    cfg = _cfg(shard="fsdp", precision="bf16", coordinator="127.0.0.1:1234", num_processes=2, process_id=1)
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(AiosError, match="not divisible"):
        _cfg(batch=60).validate()
    with pytest.raises(AiosError, match="unknown train config keys"):
        TrainConfig.from_json('{"stepz": 3}')
    with pytest.raises(AiosError, match="--shard"):
        _cfg(shard="tp").validate()


def test_batches_are_a_function_of_seed_and_step(digits):
    a = ArrayLoader(digits, "train", 64, seed=3)
    b = ArrayLoader(digits, "train", 64, seed=3, start_step=30)
    np.testing.assert_array_equal(a.host_batch(30)[0], b.host_batch(30)[0])
    idx = np.concatenate([a.indices(s) for s in range(1400 // 64 + 1)])[:1400]
    assert len(np.unique(idx)) == 1400  # one epoch sees every row once


def test_trains_and_reports_metrics(digits, tmp_path):
    rows = []
    out = train(
        _cfg(steps=120, checkpoint_every=60, eval_every=60, log_interval_s=0),
        rows.append,
        None,
        tmp_path / "ck",
        dataset=digits,
    )
    train_rows = [r for r in rows if "split" not in r]
    evals = [r for r in rows if r.get("split") == "val"]
    assert {"step", "time", "loss", "accuracy", "examples_per_s", "step_time"} <= set(train_rows[0])
    assert [r["step"] for r in evals] == [60, 120]
    assert evals[-1]["accuracy"] > 0.9 and train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert out["step"] == 120 and not out["stopped"] and out["latest_checkpoint"] == 120
    assert all(isinstance(v, (int, float, str)) for r in rows for v in r.values())


@pytest.mark.parametrize("shard", ["dp", "fsdp"])
def test_stop_and_resume_is_bitwise_exact(digits, tmp_path, shard):
    cfg = _cfg(shard=shard, steps=30)
    whole = train(cfg, None, None, tmp_path / "whole", dataset=digits)
    calls = iter(range(1000))
    first = train(cfg, None, lambda: next(calls) >= 12, tmp_path / "split", dataset=digits)  # stops after step 13
    assert first["stopped"] and first["step"] == 13 and first["latest_checkpoint"] == 13
    second = train(cfg, None, None, tmp_path / "split", dataset=digits)
    assert second["step"] == whole["step"] == 30
    a, b = load_params(tmp_path / "whole"), load_params(tmp_path / "split")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    again = train(cfg, None, None, tmp_path / "split", dataset=digits)  # already done: nothing to do
    assert again["step"] == 30


def test_nan_loss_fails_clearly_and_keeps_last_good_checkpoint(digits, tmp_path):
    cfg = _cfg(optimizer="sgd", lr=1e12, clip=0.0, warmup=0, steps=200, checkpoint_every=1, n_devices=2)
    with pytest.raises(TrainingDiverged, match="loss became"):
        train(cfg, None, None, tmp_path / "ck", dataset=digits)
    with Checkpoints(tmp_path / "ck", read_only=True) as ck:
        last = ck.latest_step()
        assert last is not None
        params = ck.restore_numpy(last)["params"]
    assert all(np.isfinite(p).all() for p in jax.tree.leaves(params))


def test_bad_requests_are_refused(digits, tmp_path):
    with pytest.raises(AiosError, match="only 8 exist"):
        train(_cfg(n_devices=16, batch=64), None, None, tmp_path / "a", dataset=digits)
    with pytest.raises(AiosError, match="does not fit|lm"):
        train(_cfg(task="lm"), None, None, tmp_path / "b", dataset=digits)
    assert not (tmp_path / "b").exists()  # refused before anything was written
