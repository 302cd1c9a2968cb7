"""Datasets from an object store: a real S3 API (moto's server on 127.0.0.1) through s3fs, every source kind,
credentials from the environment and the AWS files, one-line errors that write nothing, and a zarr store much
larger than the streaming budget declared with a bounded peak RSS."""

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid

import numpy as np
import pandas as pd
import pytest
import zarr

import aios_lab as aios
from aios_lab.catalog import catalog
from aios_lab.errors import InvalidInput, NotFound
from aios_lab.procs import free_port

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "hf")
KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE")


@pytest.fixture(scope="module")
def endpoint():
    """moto's S3 server in its own process (its memory is not ours), stopped after the module."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("moto server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def aws(endpoint, tmp_path, monkeypatch):
    """Credentials in the environment, no AWS files of the machine's, and a fresh bucket; yields its name."""
    for k in KEYS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    fs().mkdir(bucket)
    return bucket


def fs():
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


def put(bucket, name, data: bytes) -> str:
    with fs().open(f"{bucket}/{name}", "wb") as f:
        f.write(data)
    return f"s3://{bucket}/{name}"


def nothing_written(home):
    assert catalog().query("SELECT * FROM datasets") == []
    assert not (home / "datasets").exists() or not any((home / "datasets").iterdir())
    assert not (home / "tmp").exists() or not any((home / "tmp").iterdir())


def test_every_source_kind_reads_from_s3_as_its_local_copy_does(aws, tmp_path, aios_home):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((60, 4)).astype(np.float32), rng.integers(0, 3, 60)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    np.save(tmp_path / "t.npy", np.column_stack([x, y]))
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "target": y}).to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "docs").mkdir()
    for i in range(3):
        (tmp_path / "docs" / f"{i}.txt").write_text(f"document {i}: " + "the quick brown fox " * 20)
    (tmp_path / "c.jsonl").write_text(
        "".join(json.dumps({"text": f"line {i} of the licence"}) + "\n" for i in range(20))
    )
    group = zarr.open_group(f"s3://{aws}/d.zarr", mode="w", zarr_format=3)
    group.create_array("x", data=x, chunks=(16, 4))
    group.create_array("y", data=y, chunks=(16,))
    local = zarr.create_group(store=str(tmp_path / "d.zarr"), zarr_format=3)
    local.create_array("x", data=x)
    local.create_array("y", data=y)
    for name in ("d.npz", "t.npy", "d.csv", "c.jsonl", *(f"docs/{i}.txt" for i in range(3))):
        put(aws, name, (tmp_path / name).read_bytes())
    aios.registry.import_model("tiny", os.path.join(FIXTURES, "llama"))

    pairs = {
        "npz": (f"s3://{aws}/d.npz", str(tmp_path / "d.npz"), {}),
        "npy": (f"s3://{aws}/t.npy", str(tmp_path / "t.npy"), {}),
        "csv": (f"s3://{aws}/d.csv", str(tmp_path / "d.csv"), {}),
        "zarr": (f"s3://{aws}/d.zarr", str(tmp_path / "d.zarr"), {}),
        "text": (f"text:s3://{aws}/docs/*.txt", f"text:{tmp_path}/docs/*.txt", {"block": 32}),
        "jsonl": (f"jsonl:s3://{aws}/c.jsonl", f"jsonl:{tmp_path}/c.jsonl", {"tokenizer": "tiny", "format": "text"}),
    }
    for kind, (url, path, kw) in pairs.items():
        remote, here = aios.dataset(f"s3-{kind}", url, **kw), aios.dataset(f"local-{kind}", path, **kw)
        assert remote.hash == here.hash and remote.splits == here.splits, kind
        assert remote.source.startswith(url)
    assert aios.dataset("s3-zarr").n_classes == 3 and aios.dataset("s3-text").task == "lm"


def test_credentials_come_from_the_aws_files_and_profiles(aws, tmp_path, monkeypatch, aios_home):
    url = put(aws, "d.npz", _npz_bytes(tmp_path))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    creds = tmp_path / "credentials"
    sections = {"default": ("a", "b"), "ci": ("c", "d")}
    creds.write_text(
        "".join(f"[{n}]\naws_access_key_id = {k}\naws_secret_access_key = {s}\n" for n, (k, s) in sections.items())
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    assert aios.dataset("from-default", url).splits["train"] == 16
    monkeypatch.setenv("AWS_PROFILE", "ci")
    assert aios.dataset("from-profile", url).splits["train"] == 16
    monkeypatch.setenv("AWS_PROFILE", "nope")
    with pytest.raises(InvalidInput) as e:
        aios.dataset("from-missing-profile", url)
    assert "\n" not in str(e.value) and "nope" in str(e.value)


def _npz_bytes(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "small.npz", x=rng.standard_normal((20, 3)), y=np.arange(20) % 2)
    return (tmp_path / "small.npz").read_bytes()


def test_no_credentials_a_missing_bucket_or_object_is_one_line_and_writes_nothing(
    aws, tmp_path, monkeypatch, aios_home
):
    url = put(aws, "d.npz", _npz_bytes(tmp_path))
    group = zarr.open_group(f"s3://{aws}/z.zarr", mode="w", zarr_format=3)
    group.create_array("x", data=np.ones((10, 2), np.float32))
    group.create_array("y", data=np.arange(10) % 2)
    cases = [
        (f"s3://no-such-bucket-{aws}/d.npz", NotFound, "bucket 'no-such-bucket-"),
        (f"s3://no-such-bucket-{aws}/d.zarr", NotFound, "bucket 'no-such-bucket-"),
        (f"s3://{aws}/missing.npz", NotFound, "not found; check the URL"),
        (f"text:s3://{aws}/none/*.txt", InvalidInput, "no files match"),
        ("gs://bucket/d.npz", InvalidInput, "needs gcsfs: pip install gcsfs"),
    ]
    for source, kind, match in cases:
        with pytest.raises(kind, match=match) as e:
            aios.dataset("d", source)
        assert "\n" not in str(e.value) and len(str(e.value)) < 250, str(e.value)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    for source in (url, f"s3://{aws}/z.zarr", f"text:s3://{aws}/*.txt", f"jsonl:s3://{aws}/c.jsonl"):
        kw = {"tokenizer": "tiny", "format": "text"} if source.startswith("jsonl:") else {}
        if kw:
            aios.registry.import_model("tiny", os.path.join(FIXTURES, "llama"))
        with pytest.raises(InvalidInput, match=r"no credentials to read s3://.*AWS_ACCESS_KEY_ID") as e:
            aios.dataset("d", source, **kw)
        assert "\n" not in str(e.value)
    nothing_written(aios_home)


# The declaring process, in a subprocess of its own: warm up (imports, botocore's service models), reset the
# peak RSS (Linux's /proc/self/clear_refs), declare the big store, report the peak during the declaration.
# getrusage's ru_maxrss also keeps the high-water mark that threads exiting earlier left behind (botocore's
# warm-up), which the reset does not clear; VmHWM is the same peak for the process's memory alone, reset.
DECLARE = r"""
import json, resource, sys
import numpy as np, zarr
import aios_lab as aios
from aios_lab.data import stream
stream.BLOCK_BYTES = int(sys.argv[2])
small = zarr.open_group(sys.argv[1] + "-small", mode="w", zarr_format=3)
small.create_array("x", data=np.ones((20, 4), np.float32)); small.create_array("y", data=np.arange(20) % 2)
aios.dataset("warm", sys.argv[1] + "-small")
def hwm():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base, base_maxrss = hwm(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
ds = aios.dataset("big", sys.argv[1])
peak, maxrss = hwm(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
x, y = ds.arrays("train")
rows = np.asarray(x[:: max(1, x.shape[0] // 64)])
print(json.dumps({"base": base, "peak": peak, "maxrss": [base_maxrss, maxrss], "splits": ds.splits,
                  "rows": rows[:, :4].tolist(), "y": np.asarray(y[:: max(1, x.shape[0] // 64)]).tolist()}))
"""


def test_a_zarr_store_many_times_the_memory_budget_streams_with_a_bounded_peak_rss(aws, aios_home):
    rows, cols, budget = 65536, 1024, 4 << 20  # 256 MiB of float32 features, 64 times the budget
    url = f"s3://{aws}/big.zarr"
    group = zarr.open_group(url, mode="w", zarr_format=3)
    xs = group.create_array("x", shape=(rows, cols), chunks=(1024, cols), dtype="float32")
    group.create_array("y", data=(np.arange(rows) % 10).astype(np.int64), chunks=(8192,))
    for start in range(0, rows, 8192):  # row i holds i, then (7i + j) mod 251: each row says where it came from
        i = np.arange(start, start + 8192)[:, None]
        block = ((i * 7 + np.arange(cols)) % 251).astype(np.float32)
        block[:, 0] = i[:, 0]
        xs[start : start + 8192] = block
    out = subprocess.run(
        [sys.executable, "-c", DECLARE, url, str(budget)],
        env={**os.environ, "AIOS_HOME": str(aios_home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    data_bytes = rows * cols * 4
    grew = r["peak"] - r["base"]
    assert grew < 96 << 20 < data_bytes // 2, f"peak RSS grew {grew / 2**20:.0f} MiB for {data_bytes / 2**20:.0f} MiB"
    assert r["maxrss"][1] - r["maxrss"][0] < 96 << 20  # getrusage's peak did not grow more either
    assert sum(r["splits"].values()) == rows
    for (source, *values), label in zip(r["rows"], r["y"]):  # shuffled into splits, each row whole
        assert values == [(source * 7 + j) % 251 for j in (1, 2, 3)] and label == int(source) % 10
    assert len({row[0] for row in r["rows"]}) == len(r["rows"])
