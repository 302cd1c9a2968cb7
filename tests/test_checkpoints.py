"""Orbax checkpoints: sharded round trip, latest-N plus best retention, half-written ones never count."""

import jax
import numpy as np
import optax
import pytest

from aios_lab.errors import NotFound
from aios_lab.train import sharding as shardlib
from aios_lab.train.checkpoints import Checkpoints, load_params


def _state(mesh):
    params = {
        "w": jax.device_put(
            np.arange(64, dtype=np.float32).reshape(8, 8), shardlib.param_shardings(np.zeros((8, 8)), mesh, "fsdp")
        ),
        "b": jax.device_put(np.ones(3, np.float32), shardlib.replicated(mesh)),
    }
    tx = optax.adam(1e-3)
    return {"step": jax.numpy.int32(5), "params": params, "opt_state": tx.init(params)}


def test_round_trip_keeps_shardings_and_optax_types(tmp_path):
    mesh = shardlib.make_mesh()
    state = _state(mesh)
    with Checkpoints(tmp_path / "ck") as ck:
        ck.save(5, state)
        ck.wait()
        back = ck.restore(5, state)
    assert back["params"]["w"].sharding == state["params"]["w"].sharding
    assert type(back["opt_state"][0]) is type(state["opt_state"][0])  # ScaleByAdamState, not a list
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    params = load_params(tmp_path / "ck")  # any host, any device count: numpy
    assert isinstance(params["w"], np.ndarray) and params["w"][1, 0] == 8


def test_keeps_latest_few_plus_best(tmp_path):
    accuracy = {1: 0.5, 2: 0.9, 3: 0.6, 4: 0.7, 5: 0.65}
    with Checkpoints(tmp_path / "ck", keep=2, best="accuracy") as ck:
        for step, acc in accuracy.items():
            ck.save(step, {"w": np.full(4, step, np.float32)}, metrics={"accuracy": acc})
            ck.wait()
        assert ck.steps() == [2, 4, 5]
        assert ck.best_step() == 2 and ck.latest_step() == 5
    with Checkpoints(tmp_path / "ck", keep=2, best="accuracy", read_only=True) as ck:  # reopened: the same
        assert ck.best_step() == 2 and ck.steps() == [2, 4, 5]


def test_best_follows_the_shared_metric_names(tmp_path):
    mse = {1: 0.5, 2: 0.1, 3: 0.3}
    with Checkpoints(tmp_path / "ck", keep=1, best="mse") as ck:  # regression: lower is better
        for step, value in mse.items():
            ck.save(step, {"params": np.full(2, step, np.float32)}, metrics={"mse": value, "loss": value})
            ck.wait()
        assert ck.steps() == [2, 3] and ck.best_step() == 2
    with Checkpoints(tmp_path / "ck", read_only=True) as ck:  # a reader that asks for accuracy: ranked by mse
        assert ck.best_step() == 2
    assert load_params(tmp_path / "ck", "best")[0] == 2


def test_half_written_checkpoint_never_counts(tmp_path):
    with Checkpoints(tmp_path / "ck") as ck:
        ck.save(3, {"w": np.ones(2, np.float32)})
    # what a crash mid-save leaves behind: orbax's temporary directory for step 7
    tmp = tmp_path / "ck" / "7.orbax-checkpoint-tmp-1234"
    (tmp / "default").mkdir(parents=True)
    (tmp / "default" / "partial").write_bytes(b"\0" * 10)
    with Checkpoints(tmp_path / "ck", read_only=True) as ck:
        assert ck.latest_step() == 3 and ck.steps() == [3]
    with Checkpoints(tmp_path / "ck") as ck:  # a writer cleans the leftovers up
        assert ck.latest_step() == 3
    with pytest.raises(NotFound, match="no checkpoint 7"):
        load_params(tmp_path / "ck", 7)


def test_a_reader_looking_while_the_writer_removes_old_checkpoints_never_fails(tmp_path):
    """The sidebar's job view opens a job's checkpoints read-only while its worker saves with keep=1 and
    removes the previous step: a step listed then removed must not turn the look into an error."""
    import threading

    mesh = shardlib.make_mesh()
    state = _state(mesh)
    done, seen, errors = threading.Event(), set(), []

    def look():
        while not done.is_set():
            try:
                with Checkpoints(tmp_path / "ck", read_only=True) as ck:
                    seen.update(ck.steps())
            except Exception as exc:  # what the reader must never meet
                errors.append(repr(exc))

    (tmp_path / "ck").mkdir()
    reader = threading.Thread(target=look)
    reader.start()
    try:
        with Checkpoints(tmp_path / "ck", keep=1) as ck:
            for step in range(1, 41):
                ck.save(step, state)
                ck.wait()
    finally:
        done.set()
        reader.join()
    assert not errors, errors[:3]
    assert len(seen) > 1  # the reader did look while steps came and went
