"""Sweeps: bad input refused before anything is written, a sweep with ASHA that prunes and publishes its best,
and a sweep that outlives the process that started it, survives its driver's death and cancels as a whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from IPython.core.error import UsageError

import aios_lab as aios
from aios_lab.errors import AiosError, Conflict, InvalidInput
from aios_lab.sweeps import space, store


@pytest.fixture
def digits():
    return aios.dataset("digits", "sklearn:digits", split="train=0.8,val=0.2")


def _nothing_written(home, name):
    assert store.row(name) is None
    assert not (home / "sweeps" / name).exists()
    assert [j.name for j in aios.jobs() if j.name.startswith(name)] == []


def _wait_for(check, timeout=240.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_space_parses_ranges_choices_and_constants():
    s = space.parse("lr=1e-4..1e-2:log, batch=64|128|256, width=128|256, depth=2..4, act=gelu")
    assert s["lr"].log and s["lr"].low == 1e-4 and s["lr"].high == 1e-2
    assert s["batch"].choices == (64, 128, 256)
    assert (s["depth"].low, s["depth"].high, s["depth"].log) == (2, 4, False)
    assert s["act"].choices == ("gelu",)
    assert space.size(space.parse("a=1|2, b=3|4|5")) == 6 and space.size(s) is None
    assert space.from_json(space.to_json(s)) == s
    assert space.describe(s["lr"]) == "0.0001..0.01:log"
    for bad in ("", " , ", "lr", "lr=", "lr=1e-2..1e-4", "lr=0..1:log", "lr=1..2:sqrt", "a=1|1", "a=x..y", "A=1|2"):
        with pytest.raises(InvalidInput) as err:
            space.parse(bad)
        assert "\n" not in str(err.value)


def test_bad_input_is_one_line_and_queues_nothing(ip, aios_home, digits):
    base = dict(model="mlp", trials=4, steps=20)
    cases = [
        (dict(over=""), "--over is empty"),
        (dict(over="lr=fast"), None),
        (dict(over="lr=1e-2..1e-4"), "low end"),
        (dict(over="lr=1e-4..1e-2", metric="val.mse"), "report val.loss, val.accuracy"),
        (dict(over="lr=1e-4..1e-2", metric="test.loss"), "split val or train"),
        (dict(over="lr=1e-4..1e-2", devices_per_trial=9), "this machine has 8"),
        (dict(over="lr=1e-4..1e-2", sampler="grid"), "grid needs listed values"),
        (dict(over="lr=1e-4..1e-2", early_stop="median"), "--early-stop"),
        (dict(over="lr=1e-4..1e-2", trials=0), "--trials"),
        (dict(over="colour=1|2"), "no training option"),
        (dict(over="batch=63|64", devices_per_trial=2), "not divisible"),
        (dict(over="lr=-1|0.1"), "--over lr=-1"),
    ]
    for kwargs, says in cases:
        with pytest.raises(AiosError) as err:
            aios.sweep("bad", "digits", **{**base, **kwargs})
        assert "\n" not in str(err.value), str(err.value)
        if says:
            assert says in str(err.value), str(err.value)
        _nothing_written(aios_home, "bad")

    aios.dataset("noval", "sklearn:iris", split="train=1.0")
    with pytest.raises(InvalidInput, match="no val split"):
        aios.sweep("bad", "noval", over="lr=1e-3|1e-2", metric="val.loss")
    _nothing_written(aios_home, "bad")

    with pytest.raises(UsageError) as err:  # the magic says the same in one line
        ip.run_line_magic("aios", 'sweep bad --dataset digits --over "lr=" --trials 4')
    assert "cannot parse 'lr='" in str(err.value) and "\n" not in str(err.value)
    _nothing_written(aios_home, "bad")
    with pytest.raises(UsageError, match="this machine has 8"):  # a quoted, valid --over gets to the next check
        line = 'sweep bad --dataset digits --over "lr=1e-4..1e-2:log, width=4|8" --devices-per-trial 9'
        ip.run_line_magic("aios", line)
    _nothing_written(aios_home, "bad")


def test_sweep_prunes_publishes_its_best_and_compares_the_top_three(ip, aios_home, digits):
    sw = aios.sweep(
        "tune",
        "digits",
        model="mlp",
        over="lr=1e-4..3e-1:log, width=4|64",
        trials=6,
        metric="val.loss",
        early_stop="asha",
        sampler="random",
        parallel=3,
        steps=40,
        eval_every=10,
        batch=64,
    )
    assert sw.wait(timeout=600) == "succeeded", sw.table()
    trials = sw.trials()
    assert len(trials) == 6 and {t.job for t in trials} == {f"tune-t{i:02d}" for i in range(6)}
    pruned = [t for t in trials if t.state == "pruned"]
    assert pruned, sw.table()
    for t in pruned:  # a pruned trial is an ordinary job that checkpointed and stopped early
        job = aios.job(t.job)
        assert job.state == "pruned" and job.step < 40 and job.checkpoints()
        assert job.step % 10 == 1, f"pruned at an evaluation, it stops at the next step, not at {job.step}"
    done = [t for t in trials if t.state == "succeeded"]
    best = sw.best()
    assert best.value == min(t.value for t in done) and aios.job(best.job).state == "succeeded"
    assert sw.device_steps() == sum(aios.job(t.job).step for t in trials) < 6 * 40

    info = sw.to_json()
    assert info["best"]["job"] == best.job and info["counts"]["pruned"] == len(pruned)
    assert set(info["curves"]) == {t.job for t in trials} and all(info["curves"][best.job])
    json.dumps(info)
    html = sw.widget().chart.value
    assert html.count("class='aios-series'") == len([j for j, c in info["curves"].items() if c])
    assert "#bbb" in html  # pruned trials greyed

    mv = ip.run_line_magic("aios", "publish tune --best --as tuned")
    assert mv.lineage["job"] == best.job and mv.lineage["sweep"]["name"] == "tune"
    assert mv.lineage["sweep"]["params"] == best.params and mv.lineage["sweep"]["value"] == best.value

    top = ip.run_line_magic("aios", "compare tune --top 3")
    assert top.jobs == [t.job for t in sw.top(3)] and len(top.jobs) == 3  # finished first, then pruned ones
    assert top.jobs[: len(done)] == [t.job for t in sorted(done, key=lambda t: t.value)][:3]
    three = ip.run_line_magic("aios", "compare tune-t00 tune-t01 tune-t02")
    assert "val.loss" in three.metrics() and "train.lr" in three.config and "provenance.cwd" not in three.config
    assert "settings that differ" in three._repr_html_()

    for name, says in (("tune-t00", "a job is named 'tune-t00'"), ("tune", "a sweep named 'tune' exists")):
        with pytest.raises(Conflict, match=says):  # names clash: refused, nothing queued
            aios.sweep(name, "digits", over="lr=1e-3|1e-2", trials=2, steps=20)
    assert len(aios.jobs()) == 6 and [s.name for s in aios.sweeps()] == ["tune"]

    table = ip.run_line_magic("aios", "sweeps")
    assert table.records()[0]["sweep"] == "tune" and table.records()[0]["best"] == best.job


def test_sweep_outlives_its_starter_and_its_driver_then_cancels_whole(aios_home, digits):
    starter = (
        "import aios_lab as aios; "
        "aios.sweep('long', 'digits', model='mlp', over='lr=1e-3|1e-2, width=16|32', trials=4, parallel=2, "
        "sampler='grid', steps=100000, batch=64, checkpoint_every=20, eval_every=50)"
    )
    subprocess.run([sys.executable, "-c", starter], check=True, env=dict(os.environ), timeout=300)
    assert [s.name for s in aios.sweeps()] == ["long"]  # the starting process is gone; the sweep is not
    sw = aios.sweep("long")

    def two_checkpointed():
        ts = sw.trials()
        return len(ts) == 2 and all(t.state == "running" and aios.job(t.job).checkpoints() for t in ts)

    _wait_for(two_checkpointed, what="two trials running with a checkpoint")
    driver = store.row("long")["pid"]
    os.kill(driver, signal.SIGKILL)  # its driver dies (as it would in a reboot); the trials go on
    _wait_for(lambda: not store.driver_alive(store.row("long")), 30, "the driver to die")
    sw.resume()
    _wait_for(lambda: store.driver_alive(store.row("long")), 30, "a new driver")
    assert store.row("long")["pid"] != driver
    assert len(sw.trials()) == 2  # the new driver adopted the trials in flight, asked for no duplicate

    sw.cancel()
    assert sw.wait(timeout=180) == "cancelled"
    for t in sw.trials():
        job = aios.job(t.job)
        assert job.state == "cancelled" and t.state == "cancelled"
        assert job.checkpoints() and job.checkpoints()[-1] == job.step  # it checkpointed where it stopped
    _wait_for(lambda: not store.driver_alive(store.row("long")), 30, "the driver to exit")
    assert len(sw.trials()) == 2  # nothing started after the cancel
