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
from aios_lab.data.sources import BUNDLED_SKLEARN
from aios_lab.errors import AiosError, Conflict, InvalidInput, NotFound


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


def test_python_callers_give_user_ns_or_a_dict_of_arrays():
    global GLOBAL_X, GLOBAL_Y
    GLOBAL_X, GLOBAL_Y = toy(30)
    with pytest.raises(InvalidInput, match=r"user_ns=globals\(\)") as err:  # no peeking at the caller's frames
        aios.dataset("glob", "vars:GLOBAL_X,GLOBAL_Y", split="train=1")
    assert "\n" not in str(err.value)
    assert aios.dataset("glob", "vars:GLOBAL_X,GLOBAL_Y", split="train=1", user_ns=globals()).splits == {"train": 30}
    ds = aios.dataset("arrays", {"x": GLOBAL_X, "y": GLOBAL_Y}, split="train=1")
    assert ds.source == "arrays:x,y" and np.array_equal(ds.load("train")[0], get("glob").load("train")[0])
    with pytest.raises(InvalidInput, match="arrays named x and y"):
        aios.dataset("arrays", {"features_wrong": GLOBAL_X})


@pytest.mark.parametrize("name", BUNDLED_SKLEARN)
def test_every_bundled_sklearn_loader(name):
    import sklearn.datasets

    ds = aios.dataset(name.replace("_", "-"), f"sklearn:{name}")
    bunch = getattr(sklearn.datasets, f"load_{name}")()
    assert sum(ds.splits.values()) == len(bunch.target)
    if name in ("diabetes", "linnerud"):
        assert ds.task == "regression" and ds.n_classes is None
    else:
        assert ds.task == "classification" and ds.n_classes == len(bunch.target_names)
    if name == "breast_cancer":  # feature_names is a numpy array there
        assert ds.schema["feature_names"][0] == "mean radius" and ds.schema["classes"] == ["malignant", "benign"]
    if name == "linnerud":  # three targets per sample
        assert ds.target_shape == (3,) and ds.schema["target_names"] == ["Weight", "Waist", "Pulse"]
        assert ds.load("train")[1].shape[1:] == (3,)
    if name == "digits":
        assert ds.feature_shape == (8, 8) and ds.n_classes == 10
    if name == "iris":
        assert ds.schema["classes"] == ["setosa", "versicolor", "virginica"] and ds.feature_shape == (4,)


@pytest.mark.parametrize("name", ["fetch_california_housing", "california_housing", "mnist"])
def test_a_sklearn_set_that_is_not_bundled_is_one_line(name, aios_home):
    with pytest.raises(InvalidInput, match="bundled ones: iris, wine, digits, breast_cancer, diabetes, linnerud") as e:
        aios.dataset("x", f"sklearn:{name}")
    assert "\n" not in str(e.value)
    nothing_written(aios_home)


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


@pytest.mark.parametrize("kind", ["labels", "renumbered", "regression"])
def test_a_zarr_store_streams_into_the_same_version_as_the_arrays_in_memory(tmp_path, monkeypatch, kind):
    from aios_lab.data import stream

    rng = np.random.default_rng(5)
    x = rng.standard_normal((301, 3, 4)).astype(np.float64)  # converted to float32 block by block
    y = {
        "labels": rng.integers(0, 4, 301),
        "renumbered": rng.choice([-7, 3, 5000], 301),  # negative and sparse labels are renumbered
        "regression": rng.standard_normal((301, 2)),
    }[kind]
    g = zarr.create_group(store=str(tmp_path / "s.zarr"), zarr_format=3)
    g.create_array("x", data=x, chunks=(7, 3, 4))
    g.create_array("labels", data=y, chunks=(50, *y.shape[1:]))
    monkeypatch.setattr(stream, "BLOCK_BYTES", 700)  # a few rows at a time: many blocks, reads and writes
    monkeypatch.setattr(stream, "GAP_BYTES", 100)
    streamed = aios.dataset("streamed", str(tmp_path / "s.zarr"), target="labels", split="train=0.7,val=0.3", seed=4)
    held = aios.dataset("held", {"x": x, "labels": y}, target="labels", split="train=0.7,val=0.3", seed=4)
    assert streamed.hash == held.hash and streamed.schema == held.schema and streamed.splits == held.splits
    for split in held.splits:
        for a, b in zip(streamed.load(split), held.load(split)):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    assert streamed.arrays("train")[0].chunks == held.arrays("train")[0].chunks
    assert not any((tmp_path / "aios" / "tmp").iterdir())  # the scratch files are gone


def test_a_zarr_store_with_nan_features_streams_nothing(tmp_path, aios_home, monkeypatch):
    from aios_lab.data import stream

    x = np.ones((40, 2), np.float32)
    x[33, 1] = np.nan  # in the last block: found after earlier blocks went to scratch
    g = zarr.create_group(store=str(tmp_path / "n.zarr"), zarr_format=3)
    g.create_array("x", data=x, chunks=(8, 2))
    g.create_array("y", data=np.arange(40) % 2)
    monkeypatch.setattr(stream, "BLOCK_BYTES", 64)
    with pytest.raises(InvalidInput, match="NaN or infinite features"):
        aios.dataset("nan", str(tmp_path / "n.zarr"))
    nothing_written(aios_home)


class _Plant:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickle_store(tmp_path, zarr_format):
    """A zarr group whose y array declares the pickle codec and whose chunk holds a planted pickle."""
    import pickle

    path = tmp_path / f"evil{zarr_format}.zarr"
    x, y = toy(20)
    g = zarr.create_group(store=str(path), zarr_format=zarr_format)
    g.create_array("x", data=x)
    g.create_array("y", data=y, compressors=None)
    planted = tmp_path / f"unpickled-{zarr_format}"
    if zarr_format == 2:
        meta = json.loads((path / "y" / ".zarray").read_text())
        meta.update(dtype="|O", filters=[{"id": "pickle", "protocol": 5}], compressor=None)
        (path / "y" / ".zarray").write_text(json.dumps(meta))
        chunk = path / "y" / "0"
    else:
        meta = json.loads((path / "y" / "zarr.json").read_text())
        meta["codecs"] = [{"name": "numcodecs.pickle", "configuration": {"protocol": 5}}]
        (path / "y" / "zarr.json").write_text(json.dumps(meta))
        chunk = path / "y" / "c" / "0"
    chunk.write_bytes(pickle.dumps(np.array([_Plant(str(planted))] * 20, dtype=object)))
    return path, planted


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_zarr_store_with_a_pickle_codec_is_refused_and_never_unpickled(tmp_path, aios_home, zarr_format):
    path, planted = _pickle_store(tmp_path, zarr_format)
    for source in (str(path), f"file://{path}"):
        with pytest.raises(InvalidInput, match="pickle codec") as e:
            aios.dataset("evil", source)
        assert "\n" not in str(e.value) and len(str(e.value)) < 250
    assert not planted.exists()
    nothing_written(aios_home)


def test_an_unreadable_zarr_array_is_one_line(tmp_path, aios_home):
    path = tmp_path / "odd.zarr"
    g = zarr.create_group(store=str(path), zarr_format=2)
    g.create_array("x", data=np.ones((4, 2), np.float32))
    g.create_array("y", data=np.arange(4))
    meta = json.loads((path / "y" / ".zarray").read_text())
    meta["dtype"] = "|V7x"  # a data type no zarr knows
    (path / "y" / ".zarray").write_text(json.dumps(meta))
    with pytest.raises(InvalidInput, match="cannot open") as e:
        aios.dataset("odd", str(path))
    assert "\n" not in str(e.value)
    nothing_written(aios_home)


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
    with pytest.raises(NotFound, match="no version 9"):
        get("toy", 9)
    with pytest.raises(NotFound, match="datasets"):
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
        assert isinstance(err.value, InvalidInput) or name != "bad", source  # names are checked by check_name
        assert "\n" not in str(err.value) and len(str(err.value)) < 200, source
        nothing_written(aios_home)


# -- deleting --------------------------------------------------------------------------------------------


def _job_row(name, state, dataset, version):
    """A job row as the scheduler keeps it (the delete check reads the catalog's jobs table only)."""
    config = json.dumps({"dataset": dataset, "dataset_version": version, "task": "classification"})
    with catalog().tx() as db:
        db.execute(
            "INSERT INTO jobs (name, state, config, n_devices, steps, created, updated) VALUES (?,?,?,1,10,0,0)",
            (name, state, config),
        )


def test_delete_a_version_then_all_numbers_never_reused_and_audited(aios_home):
    x, y = toy()
    v1 = aios.dataset("toy", {"x": x, "y": y})
    v2 = aios.dataset("toy", {"x": x + 1, "y": y})
    gone = aios.delete_dataset("toy@1")
    assert [d.ref for d in gone] == ["toy:v1"] and not os.path.exists(v1.path) and os.path.exists(v2.path)
    assert [d.version for d in aios.datasets("toy")] == [2]
    with pytest.raises(NotFound, match="version 1 of dataset 'toy' was deleted"):
        get("toy", 1)
    assert aios.dataset("toy", {"x": x, "y": y}).version == 3  # same content as v1, a new number
    get("toy", 3).delete()
    assert aios.dataset("toy", {"x": x + 2, "y": y}).version == 4  # the newest number is not reused either
    assert [d.ref for d in aios.delete_dataset("toy")] == ["toy:v2", "toy:v4"]
    assert aios.datasets() == [] and not (aios_home / "datasets" / "toy").exists()
    assert not any((aios_home / "tmp").iterdir())
    deletes = catalog().query("SELECT object, details FROM audit WHERE action='dataset.delete' ORDER BY id")
    assert [r["object"] for r in deletes] == ["toy:v1", "toy:v3", "toy:v2", "toy:v4"]
    assert json.loads(deletes[0]["details"])["hash"] == v1.hash
    with pytest.raises(NotFound, match="no dataset 'toy'"):
        aios.delete_dataset("toy")
    with pytest.raises(InvalidInput, match="bad version"):
        aios.delete_dataset("toy@latest")


def test_delete_is_refused_while_a_job_refers_to_the_version(aios_home):
    x, y = toy()
    v1 = aios.dataset("toy", {"x": x, "y": y})
    aios.dataset("toy", {"x": x + 1, "y": y})
    _job_row("waiting", "queued", "toy", 1)
    _job_row("busy", "running", "toy", 2)
    _job_row("done", "succeeded", "toy", 1)
    with pytest.raises(Conflict, match="job 'waiting' will train on toy:v1.*--force") as e:
        aios.delete_dataset("toy", 1)
    assert "\n" not in str(e.value)
    for force in (False, True):  # never under a running job
        with pytest.raises(Conflict, match="job 'busy' is running on toy:v2"):
            aios.delete_dataset("toy@2", force=force)
        with pytest.raises(Conflict, match="'busy' is running" if force else "'waiting' will train"):
            aios.delete_dataset("toy", force=force)  # all or nothing
    assert [d.version for d in aios.datasets("toy")] == [1, 2] and os.path.exists(v1.path)
    assert catalog().query("SELECT * FROM audit WHERE action='dataset.delete'") == []
    assert [d.ref for d in aios.delete_dataset("toy@1", force=True)] == ["toy:v1"]
    assert [r["object"] for r in catalog().query("SELECT object FROM audit WHERE action='dataset.delete'")] == [
        "toy:v1"
    ]
