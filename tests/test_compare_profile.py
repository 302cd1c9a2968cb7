"""Compare and profile against real jobs: a jax.profiler trace of a running job taken without a restart (with its
step-time breakdown, the trace kept under the job), then three jobs side by side, and bad input refused."""

from __future__ import annotations

import time

import pytest
from IPython.core.error import UsageError

import aios_lab as aios
from aios_lab.errors import Conflict, InvalidInput, NotFound
from aios_lab.profile_trace import PARTS, trace_file
from aios_lab.widgets import status_parts


def _wait_for(check, timeout=240.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_profile_a_running_job_then_compare_three(ip, aios_home):
    aios.dataset("digits", "sklearn:digits", split="train=0.8,val=0.2")
    common = dict(dataset="digits", model="mlp", devices=1, batch=64, eval_every=20)
    long = aios.train("long", steps=100000, checkpoint_every=500, lr=1e-3, **common)
    short = [aios.train(f"lr{i}", steps=40, lr=lr, **common) for i, lr in enumerate((3e-3, 3e-2))]
    _wait_for(lambda: long.state == "running" and long.step >= 5, what="the long job to run")
    pid, attempts = long.pid, long.to_json()["attempts"]

    prof = ip.run_line_magic("aios", "profile long --steps 10")
    b = prof.breakdown
    assert b["steps"] >= 10 and b["step_ms"] > 0 and set(b["ms_per_step"]) == set(PARTS)
    assert b["ms_per_step"]["compute"] > 0 and b["ms_per_step"]["input"] > 0
    assert all(0 <= f for f in b["fractions"].values()) and b["devices"] >= 1
    assert prof.path.is_relative_to(aios_home / "jobs" / "long" / "profiles")
    assert trace_file(prof.path).stat().st_size > 0  # the .xplane.pb XProf and TensorBoard open
    assert long.state == "running" and long.pid == pid and long.to_json()["attempts"] == attempts  # no restart
    html = prof._repr_html_()
    assert "host/input wait" in html and "xprof --logdir" in html
    assert [p.id for p in aios.profiling.profiles("long")] == [prof.id]

    info = long.to_json()  # the job's own progress line: throughput and input wait, no profile needed
    line = " · ".join(status_parts(info))
    assert "examples/s" in line and "input wait" in line

    with pytest.raises(UsageError, match="--steps") as err:  # the magic: one line, nothing asked of the worker
        ip.run_line_magic("aios", "profile long --steps 0")
    assert "\n" not in str(err.value)
    with pytest.raises(NotFound):
        aios.profile("nope")

    long.cancel()
    assert long.wait(timeout=120) == "cancelled"
    for j in short:
        assert j.wait(timeout=240) == "succeeded"
    with pytest.raises(Conflict, match="is cancelled"):  # only a running job can be profiled
        aios.profile("long")

    cmp = ip.run_line_magic("aios", "compare long lr0 lr1")
    assert cmp.jobs == ["long", "lr0", "lr1"]
    assert {"train.loss", "val.loss", "val.accuracy"} <= set(cmp.metrics())
    assert {"train.lr", "train.steps", "train.checkpoint_every"} <= set(cmp.config)  # only what differs:
    assert not {"train.batch", "train.eval_every", "model", "dataset"} & set(cmp.config)
    assert not [k for k in cmp.config if k.startswith("provenance")]
    assert cmp.config["train.lr"] == {"long": 1e-3, "lr0": 3e-3, "lr1": 3e-2}
    summary = {e["job"]: e for e in cmp.summary()}
    assert summary["lr0"]["step"] == 40 and summary["lr0"]["val.loss best"] <= summary["lr0"]["val.loss final"]
    out = cmp._repr_html_()
    assert out.count("by step") >= 3 and out.count("by time (s)") >= 3 and "settings that differ" in out
    for job in ("long", "lr0", "lr1"):
        assert job in out and job in str(cmp)
    assert cmp.to_json()["curves"]["val.loss"]["lr1"]["time"][0][0] >= 0  # wall time since each job's start

    with pytest.raises(InvalidInput, match="say which jobs"):
        aios.compare()
    with pytest.raises(NotFound):
        aios.compare("lr0", "nope")
