"""aios on a real two-node Ray cluster (loopback only, token auth on): connect, gang jobs, faults, cancel.

One cluster serves the whole module (``ray_cluster.RayCluster``); every test body runs inside its
network namespace and the cluster is stopped at the end of the module whatever happens. Jobs are
small (a tiny MLP, a few hundred steps) because each gang start costs Ray worker processes.
"""

import os
import signal
import time

import jax
import numpy as np
import pytest
from ray_cluster import RayCluster

import aios_lab as aios
from aios_lab import cluster, verbs
from aios_lab.cluster import target
from aios_lab.cluster.capacity import GangShape, check_fits
from aios_lab.cluster.gang import GangSpec, NotShared, gang_config, run_gang
from aios_lab.cluster.rank import DECIDE_EVERY
from aios_lab.cluster.ray_support import require_ray
from aios_lab.cluster.session import ray_session
from aios_lab.errors import AiosError

JOB = dict(model="mlp", batch=64, steps=96, checkpoint_every=16, eval_every=32, lr=3e-3)
GANG = dict(on="ray", hosts=2, devices_per_host=4)


@pytest.fixture(scope="module")
def ray_cluster():
    with RayCluster(hosts=2, cpus=2, devices=4) as c:
        yield c


@pytest.fixture
def inside(ray_cluster):
    with ray_cluster.inside():
        yield ray_cluster


@pytest.fixture
def connected(inside):
    """This AIOS_HOME connected to the cluster (as ``connect`` stores it; its probe is tested once, below)."""
    t = target.Target(inside.address, "token", require_ray(), time.time())
    target.save(t, inside.token_path.read_text(), {"nodes": []})
    return inside


def wait_for(cond, timeout=300.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _gone(pids, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
        time.sleep(0.2)
    return not any(os.path.exists(f"/proc/{p}") for p in pids)


def _evals(rows):
    return {r["step"]: r for r in rows if r.get("split") == "val"}


def _bitwise(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(la, lb))


def test_connect_shows_both_hosts_and_disconnect_forgets(inside, aios_home):
    table = verbs.run(f"cluster connect {inside.address} --token-file {inside.token_path}")
    assert len(table.rows) == 2 and "auth token" in table.title and "head" in str(table)
    seen = cluster.devices()  # what connect stored, read back without starting a process
    assert seen["auth"] == "token" and seen["address"] == inside.address and seen["ray_version"] == require_ray()
    nodes = cluster.nodes(refresh=False)  # as connect saw them (the queue keeper's looks refresh them)
    assert len(nodes) == 2 and sorted(n.head for n in nodes) == [False, True]
    for n in nodes:
        assert n.alive and n.cpus == 2 and n.resources["aios_host"] == 1 and n.memory > 0 and n.aios == []
        assert n.available is not None and n.available["aios_host"] == 1
    assert aios.devices()["cluster"]["address"] == inside.address
    assert target.token_path().read_text().strip() == inside.token_path.read_text().strip()
    for f in (aios_home / "cluster").iterdir():
        assert f.stat().st_mode & 0o777 == 0o600, f
    check_fits(GangShape(hosts=2, devices_per_host=4), seen["nodes"])
    assert str(verbs.run("cluster disconnect")) == "disconnected"
    with pytest.raises(AiosError, match="no Ray cluster connected"):
        cluster.status()


def test_a_wrong_token_is_refused_and_nothing_is_stored(inside, aios_home, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("0" * 64)
    with pytest.raises(AiosError, match="refused the auth token; `ray get-auth-token` on its head"):
        cluster.connect(inside.address, token_file=wrong)
    assert not (aios_home / "cluster").exists() or not any((aios_home / "cluster").iterdir())


def test_a_gang_job_follows_local_processes_and_a_killed_rank_resumes_bitwise(connected):
    """The gang (2 hosts x 4 devices) and 2 local processes x 4 devices are the same layout: an uninterrupted
    run of either ends with the same parameters, bit for bit, so the local run is the gang's reference."""
    aios.dataset("digits", "sklearn:digits")
    local = aios.train("local", dataset="digits", devices=8, processes=2, **JOB)  # runs beside the gang
    shown = verbs.run(  # the notebook's command (``%aios train ...``), as a terminal prints it
        "train gang --dataset digits --model mlp --on ray --hosts 2 --devices-per-host 4 "
        "--batch 64 --steps 96 --checkpoint-every 16 --eval-every 32 --lr 3e-3"
    )
    assert str(shown).startswith("job gang: ") and "on ray 2 host(s) x 4 cpu device(s)" in str(shown), str(shown)
    gang = aios.job("gang")
    wait_for(lambda: gang.step >= 32 or gang.done, what="step 32 of the gang (two checkpoints)")
    j = gang.to_json()
    assert gang.state == "running" and gang.step < 96, f"the gang is still running when killed: {gang.log_tail()}"
    assert j["on"] == "ray" and j["devices"] == [] and j["gang"]["hosts"] == 2 and j["gang"]["state"] == "running"
    assert len({r["node_id"] for r in j["hosts"]}) == 2, "one rank per Ray node"
    on_nodes = {n["node_id"]: n["aios"] for n in cluster.devices()["nodes"]}
    assert sorted(sum(on_nodes.values(), [])) == ["gang rank 0", "gang rank 1"]
    placed = f"ray 2x4: r0 {j['hosts'][0]['host']} {j['hosts'][0]['node_id'][:6]}"
    assert placed in str(verbs.run("jobs")) and j["where"].startswith(placed)  # the sidebar shows j["where"]
    widget = gang.widget()  # the notebook's live view names the hosts too
    widget.update()
    assert placed in widget.header.value, widget.header.value
    widget.close()

    os.kill(j["hosts"][1]["pid"], signal.SIGKILL)  # kill -9 one rank
    assert gang.wait(timeout=600) == "succeeded", gang.log_tail()
    log = gang.log_tail(400)
    assert gang.refresh()["attempts"] == 1 and "rank 1 on" in log and "died; the gang was torn down" in log
    assert "resuming from the checkpoint at step" in log
    assert _gone([r["pid"] for r in j["hosts"]]), "the first gang's processes are gone"
    assert local.wait(timeout=600) == "succeeded", local.log_tail()
    a, b = _evals(local.metrics()), _evals(gang.metrics())
    assert sorted(a) == sorted(b) == [32, 64, 96], "steps after the checkpoint are logged once"
    for step in a:
        assert np.isclose(a[step]["loss"], b[step]["loss"], rtol=1e-3), (step, a[step], b[step])
    assert _bitwise(gang.params(), local.params()), "killed and resumed, the gang ends where an uninterrupted run does"
    assert gang.checkpoints()[-1] == 96 and gang.memory()["devices"] == 8


def test_gangs_wait_for_room_and_cancel_while_queued_pending_or_running(connected, tmp_path):
    ds = aios.dataset("digits", "sklearn:digits")
    with ray_session() as ray:
        from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

        hold = placement_group([{"aios_host": 1}] * 2, strategy="STRICT_SPREAD")  # another user holds the cluster
        ray.get(hold.ready())
        first = aios.train("first", dataset="digits", **GANG, **dict(JOB, steps=1_000_000))
        second = aios.train("second", dataset="digits", **GANG, **JOB)
        assert first.state == second.state == "queued"
        assert [(q["name"], q["on"], q["hosts"]) for q in aios.devices()["queue"]] == [
            ("first", "ray", 2),
            ("second", "ray", 2),
        ]
        assert second.cancel() == "cancelled" and second.to_json()["hosts"] == [] and second.checkpoints() == []
        remove_placement_group(hold)  # the queue keeper's next look at the cluster finds room: first starts
        wait_for(lambda: first.step > 0 or first.done, what="the queued gang to start and train")
        ranks = first.to_json()["hosts"]
        assert first.cancel() == "running"
        assert first.wait(timeout=300) == "cancelled", first.log_tail()
        step = first.step
        assert 0 < step < 1_000_000 and step % DECIDE_EVERY == 0 and first.checkpoints()[-1] == step
        assert _gone([r["pid"] for r in ranks]), "every rank stopped"
        assert {pg["state"] for pg in placement_group_table().values()} == {"REMOVED"}, "no placement group is left"
        assert all(n["aios"] == [] for n in cluster.devices()["nodes"])

        hold = placement_group([{"aios_host": 1}], strategy="STRICT_SPREAD")  # one host busy: a gang stays pending
        ray.get(hold.ready())
        t0, states = time.monotonic(), []
        shape = GangShape(hosts=2, devices_per_host=4)
        spec = GangSpec(gang_config(_config(ds), shape), str(tmp_path / "ckpt"), ds.path, ds.hash, shape, name="t")
        out = run_gang(spec, on_state=states.append, should_stop=lambda: time.monotonic() - t0 > 2, ray=ray)
        assert out["state"] == "cancelled" and out["ranks"] == []
        assert [s["state"] for s in states] == ["placing", "ended"] and not (tmp_path / "ckpt").exists()
        remove_placement_group(hold)


def test_gangs_the_cluster_cannot_hold_or_files_it_cannot_share_are_refused_at_submit(connected, aios_home):
    aios.dataset("digits", "sklearn:digits")
    too_big = (
        r"^a gang of 3 host\(s\) x 4 CPU device\(s\) cannot fit this Ray cluster: it has 2 live node\(s\), "
        r"2 of them able to hold one rank \(.*\); ask for at most 2 host\(s\)$"
    )
    with pytest.raises(AiosError, match=too_big):
        aios.train("big", dataset="digits", on="ray", hosts=3, devices_per_host=4, batch=48, steps=10)
    private = connected.node_local  # the second node sees its own empty tmpfs there
    with pytest.raises(NotShared) as err:
        aios.train("private", dataset="digits", checkpoint_dir=str(private), **GANG, steps=10)
    assert str(err.value).startswith(f"--checkpoint-dir {private} is not shared: host ")
    assert "does not see a file this machine wrote there; give a shared filesystem path or a gs:// or s3:// URI" in (
        str(err.value)
    )
    assert aios.jobs() == [] and list(private.iterdir()) == [], "nothing queued, no marker left"


def _config(ds):
    from aios_lab.train.trainer import TrainConfig

    cfg = TrainConfig(
        dataset=ds.name, dataset_version=ds.version, model={"kind": "builtin", "name": "mlp", "config": {}}
    )
    return {**cfg.__dict__, "batch": 64, "lr": 3e-3, "task": ds.task, "log_every": 1, "log_interval_s": 0.0}
