"""Datasets on zarr v3: every source kind, splits, content-hash versions, atomic writes, bad input."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import zarr

import aios_lab as aios
from aios_lab.catalog import catalog
from aios_lab.data import get, zarr_store as store
from aios_lab.errors import AiosError


def toy(n=100, d=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, classes, n)


def nothing_written(home):
    """No catalog row, no dataset directory and no staging leftovers."""
    assert catalog().query("SELECT * FROM datasets") == []
    assert not (home / "datasets").exists() or not any((home / "datasets").iterdir())
    assert not (home / "tmp").exists() or not any((home / "tmp").iterdir())


# -- sources ---------------------------------------------------------------------------------------


def test_vars_numpy_declares_a_zarr_v3_version(aios_home):
    x, y = toy()
    ds = aios.dataset("toy", "vars:x,y", user_ns={"x": x, "y": y})
    assert (ds.name, ds.version, ds.task, ds.n_classes) == ("toy", 1, "classification", 3)
    assert ds.splits == {"train": 80, "val": 10, "test": 10}
    assert ds.feature_shape == (5,) and ds.feature_dtype == "float32"
    assert ds.path == str(aios_home.resolve() / "datasets" / "toy" / "v1")
    group = zarr.open_group(ds.path, mode="r")
    assert group.metadata.zarr_format == 3
    attrs = group.attrs["aios"]
    assert attrs["source"] == "vars:x,y" and attrs["seed"] == 0 and attrs["hash"] == ds.hash
    assert attrs["schema"]["task"] == "classification" and attrs["splits"] == ds.splits
    xa, ya = ds.arrays("train")
    assert xa.shape == (80, 5) and ya.shape == (80,) and xa.chunks[0] == ya.chunks[0] <= 80
    (codec,) = xa.compressors
    assert type(codec).__name__ == "BloscCodec" and codec.cname.value == "lz4" and codec.shuffle.value == "shuffle"
    # every row lands in exactly one split, unchanged
    rows = np.concatenate([ds.load(s)[0] for s in ds.splits])
    assert sorted(map(tuple, rows)) == sorted(map(tuple, x))


def test_vars_pandas_jax_and_lists():
    import jax.numpy as jnp

    frame = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40) % 7, "label": np.arange(40) % 2})
    ds = aios.dataset("frame", "vars:df", target="label", user_ns={"df": frame}, split="train=0.5,test=0.5")
    assert ds.task == "classification" and ds.n_classes == 2 and ds.feature_shape == (2,)
    assert ds.schema["feature_names"] == ["a", "b"] and ds.schema["target_name"] == "label"
    ds = aios.dataset("jx", "vars:x,y", user_ns={"x": jnp.ones((20, 3)), "y": jnp.linspace(0, 1, 20)}, split="train=1")
    assert ds.task == "regression" and ds.n_classes is None and ds.target_dtype == "float32"
    ds = aios.dataset(
        "lists",
        "vars:x,y",
        user_ns={"x": [[1, 2], [3, 4], [5, 6], [7, 8]], "y": [0, 1, 0, 1]},
        split="train=0.5,test=0.5",
    )
    assert ds.splits == {"train": 2, "test": 2} and ds.feature_dtype == "float32"


def test_vars_defaults_to_the_callers_globals():
    global GLOBAL_X, GLOBAL_Y
    GLOBAL_X, GLOBAL_Y = toy(30)
    assert aios.dataset("glob", "vars:GLOBAL_X,GLOBAL_Y", split="train=1").splits == {"train": 30}


def test_sklearn_bundled_sets():
    digits = aios.dataset("digits", "sklearn:digits")
    assert digits.feature_shape == (8, 8) and digits.n_classes == 10 and sum(digits.splits.values()) == 1797
    iris = aios.dataset("iris", "sklearn:iris")
    assert iris.schema["classes"] == ["setosa", "versicolor", "virginica"] and iris.feature_shape == (4,)
    assert aios.dataset("diabetes", "sklearn:diabetes").task == "regression"


def test_npz_npy_csv_files(tmp_path):
    x, y = toy(60)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    a = aios.dataset("npz", str(tmp_path / "d.npz"))
    assert a.feature_shape == (5,) and sum(a.splits.values()) == 60
    np.save(tmp_path / "d.npy", np.column_stack([x, y]))
    b = aios.dataset("npy", str(tmp_path / "d.npy"))
    assert b.feature_shape == (5,) and b.task == "classification"
    assert all(
        np.array_equal(a.load(s)[0], b.load(s)[0]) and np.array_equal(a.load(s)[1], b.load(s)[1]) for s in a.splits
    )  # same rows, same seeded split
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)])
    frame["species"] = np.array(["cat", "dog", "eel"])[y]
    frame.to_csv(tmp_path / "d.csv", index=False)
    c = aios.dataset("csv", str(tmp_path / "d.csv"), target="species")
    assert c.schema["classes"] == ["cat", "dog", "eel"] and c.schema["feature_names"][0] == "f0"
    assert np.array_equal(np.sort(np.concatenate([c.load(s)[1] for s in c.splits])), np.sort(y))


def test_zarr_path_and_fsspec_urls(tmp_path):
    x, y = toy(50)
    g = zarr.create_group(store=str(tmp_path / "src.zarr"), zarr_format=3)
    g.create_array("x", data=x)
    g.create_array("y", data=y)
    a = aios.dataset("zpath", str(tmp_path / "src.zarr"))
    b = aios.dataset("zurl", f"file://{tmp_path / 'src.zarr'}")
    assert a.hash == b.hash and sum(a.splits.values()) == 50
    import fsspec

    frame = pd.DataFrame({"u": np.arange(30.0), "v": np.arange(30.0) * 2, "target": np.arange(30) % 3})
    with fsspec.open("memory://bucket/d.csv", "w") as f:
        frame.to_csv(f, index=False)
    c = aios.dataset("mem", "memory://bucket/d.csv")
    assert c.n_classes == 3 and c.feature_shape == (2,)


def test_text_glob_gives_byte_tokens_for_lm(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"hello world, " * 40)
    (tmp_path / "b.txt").write_bytes("é and more text ".encode() * 30)
    ds = aios.dataset("corpus", f"text:{tmp_path}/*.txt", block=32, split="train=0.9,val=0.1")
    assert ds.task == "lm" and ds.n_classes == 256 and ds.feature_shape == (32,) and ds.feature_dtype == "int32"
    total = len(b"hello world, " * 40) + len("é and more text ".encode() * 30)
    assert sum(ds.splits.values()) == (total - 1) // 32
    x, y = ds.load("train")
    assert x.dtype == np.int32 and y.shape == x.shape and x.max() < 256
    stream = b"hello world, " * 40 + "é and more text ".encode() * 30
    row = bytes(x[0].astype(np.uint8))
    start = stream.index(row)  # y is x shifted by one byte
    assert bytes(y[0].astype(np.uint8)) == stream[start + 1 : start + 33]
    assert aios.dataset("corpus2", f"text:{tmp_path}/*.txt", split="train=1").feature_shape == (128,)  # default


# -- splits and versions -----------------------------------------------------------------------------


def test_split_is_deterministic_by_seed():
    x, y = toy(200)
    ns = {"x": x, "y": y}
    a = aios.dataset("a", "vars:x,y", user_ns=ns, split="train=0.7,test=0.3", seed=5)
    b = aios.dataset("b", "vars:x,y", user_ns=ns, split={"train": 0.7, "test": 0.3}, seed=5)
    c = aios.dataset("c", "vars:x,y", user_ns=ns, split="train=0.7,test=0.3", seed=6)
    assert a.splits == {"train": 140, "test": 60}
    assert np.array_equal(a.load("test")[0], b.load("test")[0]) and a.hash == b.hash
    assert not np.array_equal(a.load("test")[0], c.load("test")[0])


def test_versions_are_content_hashes():
    x, y = toy()
    ns = {"x": x, "y": y}
    v1 = aios.dataset("toy", "vars:x,y", user_ns=ns)
    again = aios.dataset("toy", "vars:x,y", user_ns=ns)
    assert again.version == 1 and again.hash == v1.hash and again.path == v1.path
    ns["x"] = x + 1
    v2 = aios.dataset("toy", "vars:x,y", user_ns=ns)
    v3 = aios.dataset("toy", "vars:x,y", user_ns={"x": x, "y": y}, seed=1)
    assert (v2.version, v3.version) == (2, 3) and len({v1.hash, v2.hash, v3.hash}) == 3
    assert [d.version for d in aios.datasets()] == [1, 2, 3]
    assert get("toy").version == 3 and get("toy", 1).hash == v1.hash and get("toy:v2").version == 2
    assert aios.dataset("toy").version == 3  # no source: the newest version
    with pytest.raises(AiosError, match="no version 9"):
        get("toy", 9)
    with pytest.raises(AiosError, match="datasets"):
        get("nope")
    row = catalog().one("SELECT * FROM datasets WHERE name='toy' AND version=2")
    assert json.loads(row["splits"]) == v2.splits and row["nbytes"] == v2.nbytes > 0
    assert json.loads(json.dumps(v2.to_json()))["feature_shape"] == [5]


# -- atomic writes -------------------------------------------------------------------------------------


def test_failure_mid_write_leaves_nothing_visible(aios_home, monkeypatch):
    x, y = toy()
    real = store.write_split
    calls = []

    def fail_on_second_split(group, name, *a):
        calls.append(name)
        if len(calls) == 2:
            raise OSError("disk full (injected)")
        return real(group, name, *a)

    monkeypatch.setattr(store, "write_split", fail_on_second_split)
    with pytest.raises(OSError, match="injected"):
        aios.dataset("toy", "vars:x,y", user_ns={"x": x, "y": y})
    assert calls == ["train", "val"]
    nothing_written(aios_home)
    monkeypatch.setattr(store, "write_split", real)
    assert aios.dataset("toy", "vars:x,y", user_ns={"x": x, "y": y}).version == 1


def test_killed_writer_leaves_nothing_visible(aios_home):
    code = (
        "import numpy as np, aios_lab.data.zarr_store as store, aios_lab as aios\n"
        "real = store.write_split\n"
        "def slow(*a):\n"
        "    real(*a); print('WROTE', flush=True); import time; time.sleep(60)\n"
        "store.write_split = slow\n"
        "aios.dataset('big', 'vars:x,y', user_ns={'x': np.ones((1000, 4)), 'y': np.zeros(1000, int)})\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env={**os.environ, "AIOS_HOME": str(aios_home)}
    )
    try:
        assert proc.stdout.readline().strip() == "WROTE"  # the first split is on disk, in staging
        assert any((aios_home / "tmp").iterdir())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert catalog().query("SELECT * FROM datasets") == [] and not (aios_home / "datasets").exists()
    assert aios.datasets() == []
    ds = aios.dataset("big", "vars:x,y", user_ns={"x": np.ones((1000, 4)), "y": np.zeros(1000, int)})
    assert ds.version == 1 and not any((aios_home / "tmp").iterdir())  # the dead writer's staging is gone


# -- bad input -----------------------------------------------------------------------------------------


def _bad_cases(tmp_path):
    x, y = toy(20)
    pd.DataFrame({"a": [1.0, 2.0], "colour": ["red", "blue"], "target": [0, 1]}).to_csv(tmp_path / "s.csv", index=False)
    (tmp_path / "empty.csv").write_text("a,b,target\n")
    np.savez(tmp_path / "k.npz", features_wrong=x)
    ns = {"x": x, "y": y, "short": y[:10], "ex": np.zeros((0, 3)), "ey": np.zeros(0, int)}
    return [
        ("ftp-ish:thing", {}, "unknown source kind"),
        (str(tmp_path / "missing.npz"), {}, "not found"),
        ("vars:x,short", {}, "20 rows but targets have 10"),
        ("vars:ex,ey", {}, "no rows"),
        (str(tmp_path / "s.csv"), {}, "column 'colour'.*not numeric"),
        (str(tmp_path / "empty.csv"), {}, "no rows"),
        (str(tmp_path / "k.npz"), {}, "name the arrays x and y"),
        ("vars:x,y", {"name": "Bad Name"}, "invalid dataset name"),
        ("vars:x,y", {"split": "train=0.8,val=0.1"}, "sum to 0.9, not 1"),
        ("vars:x,y", {"split": "train=0.9,val"}, "bad split"),
        ("vars:nope,y", {}, "'nope' is not defined in the kernel"),
        ("sklearn:mnist", {}, "bundled ones"),
        (f"text:{tmp_path}/*.none", {}, "no files match"),
        ("vars:x,y", {"split": "train=0.99,val=0.01"}, "would be empty"),
    ], ns


def test_bad_input_is_one_clear_line_and_writes_nothing(aios_home, tmp_path):
    cases, ns = _bad_cases(tmp_path)
    for source, kw, message in cases:
        name = kw.pop("name", "bad")
        with pytest.raises(AiosError, match=message) as err:
            aios.dataset(name, source, user_ns=ns, **kw)
        assert "\n" not in str(err.value) and len(str(err.value)) < 200, source
        nothing_written(aios_home)
