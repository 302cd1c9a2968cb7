"""The sharded batch loader: pure (seed, step) order, restarts, streaming, 8 host devices, two processes."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import aios_lab as aios
from aios_lab.data import zarr_store
from aios_lab.data.loader import Loader
from aios_lab.errors import AiosError

ROWS, FEATURES = 1000, 6


@pytest.fixture
def ds(monkeypatch):
    """1000 rows whose first feature is the row id, stored in 10 chunks of 100 rows."""
    monkeypatch.setattr(zarr_store, "CHUNK_BYTES", 100 * FEATURES * 4)
    x = np.random.default_rng(0).standard_normal((ROWS, FEATURES)).astype(np.float32)
    x[:, 0] = np.arange(ROWS)
    return aios.dataset("ids", "vars:x,y", split="train=1", user_ns={"x": x, "y": np.arange(ROWS) % 10})


def sharding(n=8):
    return NamedSharding(Mesh(np.array(jax.devices()[:n]), ("data",)), PartitionSpec("data"))


def ids(batch):
    return np.asarray(batch[0])[:, 0].astype(int)


def test_host_batch_is_a_pure_function_of_seed_and_step(ds):
    a, b = Loader(ds, "train", 64, sharding(), seed=1), Loader(ds, "train", 64, sharding(), seed=1)
    for step in (0, 5, 17, 15, 3):  # any order, any instance
        xa, ya = a.host_batch(step)
        xb, yb = b.host_batch(step)
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
        assert np.array_equal(ya, xa[:, 0].astype(int) % 10)  # x and y stay paired
    assert not np.array_equal(ids(a.host_batch(0)), ids(Loader(ds, "train", 64, sharding(), seed=2).host_batch(0)))
    assert not np.array_equal(ids(a.host_batch(0)), ids(a.host_batch(15)))  # epoch 0 vs epoch 1


@pytest.mark.parametrize("budget", [None, 48_000])  # cached; streaming with 2-chunk windows
def test_every_row_once_per_epoch(ds, budget):
    loader = Loader(ds, "train", 40, sharding(), seed=3, memory_budget=budget)
    assert loader.cached is (budget is None) and loader.steps_per_epoch == 25
    for epoch in range(2):
        seen = np.concatenate([ids(loader.host_batch(epoch * 25 + j)) for j in range(25)])
        assert sorted(seen) == list(range(ROWS))


def test_streaming_shuffles_within_windows_and_reads_chunk_by_chunk(ds):
    loader = Loader(ds, "train", 48, sharding(), seed=0, memory_budget=48_000)
    assert not loader.cached and loader.window == 2
    where = np.argsort(ds.load("train")[0][:, 0])  # row id -> its position in the stored (shuffled) split
    chunks = {tuple(sorted(set(where[ids(loader.host_batch(s))] // 100))) for s in range(4)}
    assert all(len(c) <= 2 for c in chunks)  # a batch touches only its window's chunks
    assert len(loader._buffers) <= 2  # memory: the current window (and the next one)


@pytest.mark.parametrize("budget", [None, 48_000])
def test_restart_at_step_k_sees_the_same_batches(ds, budget):
    with Loader(ds, "train", 40, sharding(), seed=7, memory_budget=budget, steps=60) as full:
        straight = [(s, ids((x, y)), np.asarray(y)) for s, x, y in full]
    assert [s for s, *_ in straight] == list(range(60))
    with Loader(ds, "train", 40, sharding(), seed=7, start_step=37, memory_budget=budget, steps=60) as resumed:
        again = [(s, ids((x, y)), np.asarray(y)) for s, x, y in resumed]
    assert [s for s, *_ in again] == list(range(37, 60))
    for (s1, i1, y1), (s2, i2, y2) in zip(straight[37:], again):
        assert s1 == s2 and np.array_equal(i1, i2) and np.array_equal(y1, y2)


def test_yields_global_arrays_sharded_over_8_devices(ds):
    assert jax.device_count() == 8
    sh = sharding(8)
    loader = Loader(ds, "train", 64, sh, seed=0)
    step, x, y = next(iter(loader))
    assert step == 0 and x.shape == (64, FEATURES) and y.shape == (64,)
    assert x.sharding == sh and y.sharding == sh and len(x.addressable_shards) == 8
    assert {s.data.shape for s in x.addressable_shards} == {(8, FEATURES)}
    hx, hy = loader.host_batch(0)
    for shard in x.addressable_shards:
        assert np.array_equal(np.asarray(shard.data), hx[shard.index])
    assert np.array_equal(np.asarray(y), hy)
    loader.close()
    assert not loader._thread.is_alive()


def test_default_sharding_and_bad_batches(ds):
    loader = Loader(ds, "train", 16)
    assert loader.sharding.mesh.devices.size == 8
    with pytest.raises(AiosError, match="multiple of the device count"):
        Loader(ds, "train", 12, sharding(8))
    with pytest.raises(AiosError, match="between 1 and the 1000 rows"):
        Loader(ds, "train", 2000, sharding(8))
    with pytest.raises(AiosError, match="no split 'val'"):
        Loader(ds, "val", 8)


def test_lm_dataset_batches(tmp_path):
    (tmp_path / "t.txt").write_bytes(bytes(range(256)) * 8)
    ds = aios.dataset("bytes", f"text:{tmp_path}/t.txt", block=16, split="train=1")
    step, x, y = next(iter(Loader(ds, "train", 8, sharding(8), steps=1)))
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == np.int32 and x.shape == (8, 16) and np.array_equal(y, (x + 1) % 256)


WORKER = textwrap.dedent("""
    import os, sys, json
    import numpy as np, jax
    jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from aios_lab.data import get
    from aios_lab.data.loader import Loader
    sh = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec("data"))
    loader = Loader(get("ids"), "train", 32, sh, seed=4, steps=3)
    out = []
    for step, x, y in loader:
        local = loader.local_batch(step)[0][:, 0].astype(int).tolist()
        shards = sorted((s.index[0].start, np.asarray(s.data)[:, 0].astype(int).tolist()) for s in x.addressable_shards)
        out.append({"step": step, "lo": loader._lo, "hi": loader._hi, "local": local, "shards": shards,
                    "global": x.shape[0], "host": loader.host_batch(step)[0][:, 0].astype(int).tolist()})
    print("RESULT " + json.dumps(out), flush=True)
    jax.distributed.shutdown()
""")


def test_two_processes_each_read_only_their_slice(ds, aios_home, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {
        **os.environ,
        "AIOS_HOME": str(aios_home),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), f"127.0.0.1:{port}", str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    results = [json.loads(o[0].split("RESULT ", 1)[1]) for o in outs]
    for i, steps in enumerate(results):
        for row in steps:
            assert row["global"] == 32 and (row["lo"], row["hi"]) == (16 * i, 16 * i + 16)
            assert row["local"] == row["host"][row["lo"] : row["hi"]]  # only its own rows
            assert sum((ids for _, ids in row["shards"]), []) == row["local"]
    assert [r["host"] for r in results[0]] == [r["host"] for r in results[1]]  # both agree on the batch


def test_too_small_a_budget_is_a_clear_error(ds):
    with pytest.raises(AiosError, match="at least 8 chunks"):
        Loader(ds, "train", 8, memory_budget=10_000)
