"""The training loop: config round trip, metrics rows, stop + resume bitwise, NaN keeps the last good checkpoint."""

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits

from aios_lab import metric_names as mn
from aios_lab.errors import AiosError, InvalidInput
from aios_lab.train.arrays import ArrayDataset, ArrayLoader
from aios_lab.train.checkpoints import Checkpoints, load_params
from aios_lab.train.config import CHOICES
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


def test_a_derived_checkpoint_cadence_waits_between_saves_and_a_given_one_is_exact(digits, tmp_path):
    """A short run at the default cadence (a tenth of the run) keeps only its final checkpoint, because saves
    wait checkpoint_min_s apart; --checkpoint-every given is kept step for step."""
    derived = TrainConfig(**{**_cfg().__dict__, "checkpoint_every": None}).validate()
    assert (derived.checkpoint_every, derived.checkpoint_min_s) == (10, 30.0)
    assert _cfg().validate().checkpoint_min_s == 0.0
    train(derived, None, None, tmp_path / "derived", dataset=digits)
    train(_cfg(keep=10), None, None, tmp_path / "given", dataset=digits)
    with Checkpoints(tmp_path / "derived", read_only=True) as ck:
        assert ck.steps() == [40]
    with Checkpoints(tmp_path / "given", read_only=True) as ck:
        assert ck.steps() == [10, 20, 30, 40]


def test_config_json_round_trip_and_validation():
    cfg = _cfg(shard="fsdp", precision="bf16", coordinator="127.0.0.1:1234", num_processes=2, process_id=1)
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(AiosError, match="not divisible"):
        _cfg(batch=60).validate()
    with pytest.raises(AiosError, match="unknown train config keys"):
        TrainConfig.from_json('{"stepz": 3}')
    with pytest.raises(AiosError, match="--shard"):
        _cfg(shard="tp").validate()


def test_defaults_live_in_train_config_and_follow_the_run_length():
    assert {k: TrainConfig.defaults()[k] for k in ("steps", "weight_decay", "clip")} == {
        "steps": 500,
        "weight_decay": 1e-4,
        "clip": 1.0,
    }
    cfg = TrainConfig.for_job(steps=1000, lr=None)  # None keeps the default
    assert (cfg.checkpoint_every, cfg.eval_every, cfg.warmup, cfg.lr) == (100, 100, 100, 1e-3)
    short = TrainConfig.for_job(steps=40)
    assert (short.checkpoint_every, short.eval_every, short.warmup) == (10, 10, 4)
    assert TrainConfig.for_job(checkpoint_every=7).checkpoint_every == 7
    assert TrainConfig.for_job(clip=None).clip == 0.0  # None or 0: no clipping
    assert TrainConfig.for_job(steps=1e4).steps == 10_000 and isinstance(TrainConfig.for_job(steps=1e4).steps, int)
    assert CHOICES["optimizer"] == ("adamw", "adam", "sgd") and CHOICES["shard"] == ("dp", "fsdp")


@pytest.mark.parametrize(
    "flags, match",
    [
        (dict(steps=1e20), r"^--steps must be a whole number from 1 to 1,000,000,000, not 1e\+20$"),
        (dict(steps=2.5), "--steps must be a whole number"),
        (dict(steps="many"), "--steps must be a whole number"),
        (dict(batch=True), "--batch must be a whole number"),
        (dict(lr=float("nan")), "--lr must be a number above 0"),
        (dict(lr=1e39), "--lr must be a number above 0"),
        (dict(weight_decay=-1.0), "--weight-decay must be a number from 0"),
        (dict(clip=float("inf")), "--clip must be a number"),
        (dict(seed=2**40), "--seed must be a whole number from 0 to 4,294,967,295"),
        (dict(checkpoint_every=0), "--checkpoint-every must be a whole number from 1"),
        (dict(n_devices=8, batch=60), "not divisible by the 8"),
        (dict(precision="fp8"), "--precision must be one of fp32, bf16"),
    ],
)
def test_numbers_that_reach_jax_are_bounded(flags, match):
    with pytest.raises(InvalidInput, match=match):
        TrainConfig.for_job(**flags)


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
    names = {mn.STEP, mn.TIME, mn.LOSS, mn.ACCURACY, mn.EXAMPLES_PER_S, mn.STEP_TIME, mn.INPUT_WAIT}
    assert all(set(r) == names for r in train_rows)
    assert all(0 <= r[mn.INPUT_WAIT] <= 1 for r in train_rows)
    assert all(set(r) == {mn.STEP, mn.TIME, mn.SPLIT, mn.LOSS, mn.ACCURACY} for r in evals)
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


def test_regression_rows_and_best_checkpoint_use_the_shared_metric_names(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5, 0.0], np.float32)
    ds = ArrayDataset({"train": (x[:192], y[:192]), "val": (x[192:], y[192:])}, task="regression")
    rows = []
    out = train(_cfg(steps=30, eval_every=10, log_interval_s=0), rows.append, None, tmp_path / "ck", dataset=ds)
    evals = [r for r in rows if r.get(mn.SPLIT) == "val"]
    assert [r[mn.STEP] for r in evals] == [10, 20, 30] and all(r[mn.MSE] == r[mn.LOSS] for r in evals)
    assert all(mn.ACCURACY not in r for r in rows)
    best = min(evals, key=lambda r: r[mn.MSE])[mn.STEP]
    assert out["best_checkpoint"] == best  # ranked by mse, lower is better


def test_checkpoints_saved_while_training_equal_ones_saved_at_a_stop(digits, tmp_path):
    cfg = _cfg(steps=30)  # checkpoints at 10 and 20 are saved from a copy while the loop runs on
    train(cfg, None, None, tmp_path / "run", dataset=digits)
    calls = iter(range(1000))
    stopped = train(cfg, None, lambda: next(calls) >= 19, tmp_path / "stop", dataset=digits)  # saved in place
    assert stopped["stopped"] and stopped["latest_checkpoint"] == 20
    with Checkpoints(tmp_path / "run", read_only=True) as ck:
        assert ck.steps() == [10, 20, 30]
    a, b = load_params(tmp_path / "run", 20), load_params(tmp_path / "stop", 20)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


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
