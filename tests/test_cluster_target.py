"""The cluster target without a cluster: bad input, the Ray version check, gang sizing, datasets by path,
cluster jobs refused at submit and shown in the views."""

import json
import socket
import time

import numpy as np
import pytest
from IPython.core.error import UsageError

import aios_lab as aios
from aios_lab import cluster, verbs
from aios_lab.catalog import catalog
from aios_lab.cluster import target
from aios_lab.cluster.capacity import GangShape, check_fits, fits_now
from aios_lab.cluster.datasets import open_version
from aios_lab.cluster.probe import explain
from aios_lab.cluster.ray_support import MIN_RAY, check_version, parse, require_ray
from aios_lab.errors import AiosError, Conflict, InvalidInput


def _nothing_stored(home):
    folder = home / "cluster"
    return not folder.exists() or not any(folder.iterdir())


def test_no_cluster_connected_is_a_one_line_error(aios_home):
    for call in (cluster.status, lambda: cluster.nodes(refresh=False)):
        with pytest.raises(AiosError, match="no Ray cluster connected; `%aios cluster connect HOST:PORT` first"):
            call()
    with pytest.raises(UsageError) as err:
        verbs.run("cluster")
    assert "\n" not in str(err.value) and "cluster connect" in str(err.value)
    assert cluster.devices() is None, "the devices panel shows no cluster part"
    assert str(verbs.run("cluster disconnect")) == "no Ray cluster was connected"
    assert _nothing_stored(aios_home)


def test_bad_and_unreachable_addresses_change_nothing(aios_home):
    for bad in ("nonsense", "10.0.0.5", "host:port", "host:70000", "ray://10.0.0.5:10001", "a b:6379"):
        with pytest.raises(InvalidInput):
            cluster.connect(bad, no_auth=True)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(AiosError, match=rf"cannot reach a Ray cluster at 127\.0\.0\.1:{port} \("):
        cluster.connect(f"127.0.0.1:{port}", no_auth=True)
    with pytest.raises(UsageError, match="cannot reach a Ray cluster"):
        verbs.run(f"cluster connect 127.0.0.1:{port} --no-auth")
    assert _nothing_stored(aios_home)


def test_a_token_is_required_unless_no_auth_is_said(aios_home, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    with socket.socket() as listener:  # something answers TCP there; the token check comes first
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(AiosError, match="no Ray auth token found: give --token-file FILE"):
            cluster.connect(address)
        with pytest.raises(InvalidInput, match="contradict"):
            cluster.connect(address, token="abc", no_auth=True)
        bad = tmp_path / "token"
        bad.write_text("two words\n")
        with pytest.raises(InvalidInput, match="one line of printable characters"):
            cluster.connect(address, token_file=bad)
        with pytest.raises(InvalidInput, match="does not exist"):
            cluster.connect(address, token_file=tmp_path / "missing")
    assert _nothing_stored(aios_home)


def test_a_refused_connection_says_what_to_do():
    refused = "InvalidAuthToken"  # what Ray logs; the wording depends on whether aios sent a token
    with_token = explain("h:1", "auth", refused, {"RAY_AUTH_MODE": "token"})
    without = explain("h:1", "auth", refused, {"RAY_AUTH_MODE": "disabled"})
    assert with_token.startswith("the Ray cluster at h:1 refused the auth token; `ray get-auth-token`")
    assert without.startswith("the Ray cluster at h:1 requires an auth token; give it with `%aios cluster connect")
    assert "install the cluster's version" in explain("h:1", "version", "Version mismatch: 2.59 vs 2.60", {})


def test_ray_versions_without_the_needed_apis_are_refused():
    with pytest.raises(AiosError, match=r"Ray 2\.40\.0 lacks token authentication .* Ray 2\.52 or newer"):
        check_version("2.40.0")
    with pytest.raises(AiosError, match="Ray is not installed here; `pip install 'ray"):
        check_version(None)
    assert check_version("2.52.0") == "2.52.0" and check_version("3.0.0rc1") == "3.0.0rc1"
    assert parse(require_ray()) >= MIN_RAY  # the Ray this project installs


def _node(name, cpus=2, head=False, host=True, gpus=0, free=None):
    res = {"CPU": float(cpus), "memory": 1e9, **({"aios_host": 1.0} if host else {}), **({"GPU": gpus} if gpus else {})}
    return {"node_id": name, "ip": "10.0.0.1", "host": name, "alive": True, "head": head, "resources": res,
            "available": free}  # fmt: skip


def test_a_gang_bigger_than_the_cluster_is_refused_with_its_size():
    nodes = [_node("a", head=True), _node("b"), _node("c", host=False)]  # c offers no aios_host: not a rank's
    check_fits(GangShape(hosts=2, devices_per_host=4), nodes)
    with pytest.raises(AiosError) as err:
        check_fits(GangShape(hosts=3, devices_per_host=4), nodes)
    msg = str(err.value)
    assert "3 host(s) x 4 CPU" in msg and "3 live node(s), 2 of them able to hold one rank" in msg and "\n" not in msg
    assert "a: 2 CPU, aios_host" in msg and "ask for at most 2 host(s)" in msg
    with pytest.raises(AiosError, match="0 of them able"):
        check_fits(GangShape(hosts=1, devices_per_host=2, kind="gpu"), nodes)
    gpus = [_node("g1", gpus=8, host=False), _node("g2", gpus=8, host=False)]  # no aios_host anywhere: all count
    check_fits(GangShape(hosts=2, devices_per_host=8, kind="gpu"), gpus)
    assert GangShape(2, 8, "gpu").bundle(False) == {"CPU": 1.0, "GPU": 8.0}
    assert GangShape(2, 4).bundle(True) == {"CPU": 1.0, "aios_host": 1.0}
    busy = [_node("a", free={"CPU": 2.0, "aios_host": 1.0}), _node("b", free={"CPU": 2.0, "aios_host": 0.0})]
    assert not fits_now(GangShape(2, 4), busy) and fits_now(GangShape(1, 4), busy)
    with pytest.raises(AiosError, match="device kind"):
        GangShape(2, 4, kind="fpga")


def test_a_dataset_version_opens_by_path_without_the_catalog(aios_home, tmp_path, monkeypatch):
    ds = aios.dataset("digits", "sklearn:digits")
    monkeypatch.setenv("AIOS_HOME", str(tmp_path / "elsewhere"))  # another host: no catalog, no AIOS_HOME
    got = open_version(ds.path, expect_hash=ds.hash)
    assert not (tmp_path / "elsewhere").exists(), "opening by path touched no AIOS_HOME"
    for field in ("name", "version", "hash", "path", "seed", "splits", "schema", "task", "n_classes", "feature_shape"):
        assert getattr(got, field) == getattr(ds, field), field
    for a, b in zip(got.load("train"), ds.load("train")):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(AiosError, match="sees another dataset at .* give a path every host shares"):
        open_version(ds.path, expect_hash="0" * 64, where="rank 1 on b")
    with pytest.raises(AiosError, match="rank 1 on b cannot read the dataset at"):
        open_version(str(tmp_path / "nothing" / "v1"), where="rank 1 on b")


def test_stored_target_files_are_private(aios_home):
    t = target.Target("127.0.0.1:6379", "token", "2.60.0", 1.0)
    target.save(t, "abc123", {"nodes": []})
    assert target.load() == t and target.token_path().read_text() == "abc123\n"
    assert (aios_home / "cluster").stat().st_mode & 0o777 == 0o700
    for f in (aios_home / "cluster").iterdir():
        assert f.stat().st_mode & 0o777 == 0o600, f
    assert cluster.devices()["address"] == "127.0.0.1:6379" and cluster.devices()["nodes"] == []
    assert cluster.disconnect() and target.load() is None and not cluster.disconnect()
    assert _nothing_stored(aios_home)


# -- cluster jobs without a cluster: what submit refuses, and what the views show ------------------------


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cluster_training_bad_input_is_one_line_and_queues_nothing(aios_home, tmp_path, monkeypatch):
    aios.dataset("digits", "sklearn:digits")
    gang = dict(on="ray", hosts=2, devices_per_host=4)
    cases = [
        (dict(on="ray"), InvalidInput, "--on ray needs --hosts H and --devices-per-host K"),
        (dict(hosts=2), InvalidInput, "--hosts, --devices-per-host and --checkpoint-dir go with --on ray"),
        (dict(on="mars"), InvalidInput, "--on must be local or ray, not 'mars'"),
        (dict(gang, devices=8), InvalidInput, "--devices is for local jobs; a gang takes --devices-per-host"),
        (dict(gang, processes=2), InvalidInput, "--processes is for local jobs; a gang runs one process per host"),
        (dict(gang, hosts=0), InvalidInput, "--hosts must be a whole number from 1 to 4,096, not 0"),
        (gang, AiosError, "no Ray cluster connected; `%aios cluster connect HOST:PORT` first"),
    ]
    for extra, kind, message in cases:
        with pytest.raises(kind) as err:
            aios.train("g", dataset="digits", steps=10, **extra)
        assert str(err.value) == message or str(err.value).startswith(message), (extra, str(err.value))
    with pytest.raises(UsageError, match="no Ray cluster connected"):
        verbs.run("train g --dataset digits --model mlp --on ray --hosts 2 --devices-per-host 4")

    with monkeypatch.context() as m, pytest.raises(AiosError, match=r"^Ray 2\.40\.0 lacks token authentication"):
        m.setattr("aios_lab.cluster.ray_support.installed_version", lambda: "2.40.0")  # no old Ray to install here
        aios.train("g", dataset="digits", **gang)

    address = f"127.0.0.1:{_closed_port()}"  # connected once; its head is gone now
    target.save(target.Target(address, "none", require_ray(), 1.0), None, {"nodes": []})
    with pytest.raises(AiosError, match=rf"^cannot reach the Ray cluster at {address} \(.+\); is its head up\?"):
        aios.train("g", dataset="digits", **gang)
    with pytest.raises(InvalidInput, match=r"--checkpoint-dir 'ftp://x': give a path, or a gs:// or s3:// URI"):
        aios.train("g", dataset="digits", checkpoint_dir="ftp://x", **gang)
    (tmp_path / "ckpt" / "g").mkdir(parents=True)
    (tmp_path / "ckpt" / "g" / "0").mkdir()
    with pytest.raises(Conflict, match=r"ckpt/g already holds files; pick another --checkpoint-dir or job name"):
        aios.train("g", dataset="digits", checkpoint_dir=str(tmp_path / "ckpt"), **gang)
    assert aios.jobs() == [] and not (aios_home / "jobs" / "g").exists()


def _cluster_job(name, state, info=None):
    now = time.time()
    config = {
        "dataset": "d",
        "model": "mlp",
        "task": "classification",
        "train": {"batch": 8},
        "max_retries": 2,
        "on": "ray",
        "gang": GangShape(2, 4).__dict__,
        "checkpoint_dir": "/shared/ckpt/" + name,
    }
    with catalog().tx() as db:
        db.execute(
            "INSERT INTO jobs (name, state, config, priority, n_devices, devices, device_kind, steps, info, created, "
            "updated) VALUES (?, ?, ?, 0, 8, '[]', 'cpu', 10, ?, ?, ?)",
            (name, state, json.dumps(config), json.dumps(info) if info else None, now, now),
        )


def test_a_cluster_job_shows_its_hosts_and_disconnect_waits_for_it(aios_home):
    node = lambda i: {**_node(f"n{i}", head=i == 0), "node_id": f"node{i}" * 8, "host": f"host{i}"}
    target.save(target.Target("10.0.0.5:6379", "none", require_ray(), 1.0), None, {"nodes": [node(0), node(1)]})
    ranks = [
        {"rank": i, "node_id": f"node{i}" * 8, "ip": "10.0.0.1", "host": f"host{i}", "pid": 100 + i} for i in (0, 1)
    ]
    _cluster_job("gang", "running", {"gang": "running", "placement_group": "pg1", "ranks": ranks})
    _cluster_job("waiting", "queued")
    j = aios.job("gang").to_json()
    assert j["on"] == "ray" and j["hosts"] == ranks and j["devices"] == []
    assert j["gang"] == {**GangShape(2, 4).__dict__, "state": "running", "checkpoint_dir": "/shared/ckpt/gang"}
    assert aios.job("waiting").to_json()["hosts"] == [] and aios.job("waiting").to_json()["gang"]["state"] is None
    table = str(verbs.run("jobs"))
    assert "ray 2x4: r0 host0 node0n, r1 host1 node1n" in table and "ray 2x4" in table.split("waiting")[1]
    d = aios.devices()
    assert d["cluster"]["address"] == "10.0.0.5:6379" and [n["aios"] for n in d["cluster"]["nodes"]] == [
        ["gang rank 0"],
        ["gang rank 1"],
    ]
    assert d["queue"] == [
        {"name": "waiting", "n_devices": 8, "priority": 0, "created": d["queue"][0]["created"], "on": "ray",
         "hosts": 2, "devices_per_host": 4}
    ]  # fmt: skip
    assert all(x["job"] is None for x in d["devices"]), "a gang holds no local device"
    shown = str(verbs.run("devices"))
    assert "queue: waiting (ray 2x4) · Ray cluster 10.0.0.5:6379: 2 node(s)" in shown, shown
    for call in (cluster.disconnect, lambda: verbs.run("cluster disconnect")):
        with pytest.raises((Conflict, UsageError), match="cluster job gang is queued or running on this cluster"):
            call()
    aios.job("waiting").cancel()
    with catalog().tx() as db:
        db.execute("UPDATE jobs SET state='cancelled' WHERE name='gang'")
    assert cluster.disconnect() and cluster.devices() is None
