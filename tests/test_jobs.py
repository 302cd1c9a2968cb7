"""Training jobs end to end: detached workers, queue, cancel, kill -9 and exact resume, bad input."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import aios_lab as aios
from aios_lab.catalog import catalog
from aios_lab.errors import AiosError

SMALL = dict(model="mlp", batch=64, steps=60, checkpoint_every=10, eval_every=30, lr=3e-3)
LONGER = dict(SMALL, steps=400, checkpoint_every=25, eval_every=200)  # long enough to kill mid-way


@pytest.fixture
def digits():
    return aios.dataset("digits", "sklearn:digits", seed=0)


def wait_for(cond, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def same_params(a, b) -> bool:
    import jax

    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(la, lb))


def test_job_trains_in_a_detached_worker_and_reports_metrics(digits):
    job = aios.train("mlp-1", dataset="digits", devices=8, **SMALL)
    assert job.wait(timeout=180) == "succeeded", job.log_tail()
    assert job.step == 60 and job.pid is None
    rows = job.metrics()
    train_rows = [r for r in rows if "split" not in r]
    evals = [r for r in rows if r.get("split") == "val"]
    assert train_rows and evals and {"step", "time", "loss", "examples_per_s"} <= set(train_rows[-1])
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert evals[-1]["accuracy"] > 0.8
    assert job.checkpoints()[-1] == 60
    params = job.params()
    assert all(isinstance(leaf, np.ndarray) for leaf in __import__("jax").tree.leaves(params))
    info = job.to_json()
    assert info["devices"] == list(range(8)) and info["accuracy"] == evals[-1]["accuracy"]
    assert "job mlp-1 succeeded" in job.log_tail()
    assert aios.job("mlp-1").state == "succeeded"  # reattach by name
    mem = job.memory()
    assert mem["devices"] == 8 and mem["platform"] == "cpu"
    assert 0 < mem["state_bytes_per_device"] == mem["state_bytes"]  # dp: every device holds all of it
    assert info["state_bytes_per_device"] == mem["state_bytes_per_device"]
    scored = job.evaluate("test")
    assert scored["rows"] == digits.splits["test"] and scored["accuracy"] > 0.8
    assert job.best_step() in job.checkpoints()


def test_kill_9_at_a_random_step_resumes_to_bitwise_equal_params(digits):
    ref = aios.train("ref", dataset="digits", devices=4, **LONGER)
    victim = aios.train("victim", dataset="digits", devices=4, **LONGER)
    kill_at = random.Random().randint(30, 300)
    wait_for(lambda: victim.step >= kill_at or victim.state != "running", what=f"step {kill_at}")
    pid = victim.pid
    assert pid and victim.step < 400, "the job is still running when killed"
    os.kill(pid, signal.SIGKILL)
    assert victim.wait(timeout=180) == "succeeded", victim.log_tail()
    assert ref.wait(timeout=180) == "succeeded"
    r = catalog().one("SELECT attempts FROM jobs WHERE name='victim'")
    assert r["attempts"] == 1, f"the supervisor resumed the killed worker once (killed at step {kill_at})"
    assert "resuming from the checkpoint" in victim.log_tail(200)
    assert same_params(victim.params(), ref.params()), f"killed at step {kill_at}"


def test_manual_resume_after_a_kill_with_no_retries_left(digits):
    ref = aios.train("ref", dataset="digits", devices=2, **LONGER)
    job = aios.train("manual", dataset="digits", devices=2, max_retries=0, **LONGER)
    wait_for(lambda: job.step >= 60, what="step 60")
    os.kill(job.pid, signal.SIGKILL)
    assert job.wait(timeout=60) == "interrupted"
    assert "resume" in job.error
    job.resume()
    assert job.wait(timeout=180) == "succeeded"
    ref.wait(timeout=180)
    assert same_params(job.params(), ref.params())


def test_cancel_checkpoints_and_stops_within_seconds(digits):
    job = aios.train("long", dataset="digits", devices=2, model="mlp", batch=64, steps=100_000, checkpoint_every=5000)
    wait_for(lambda: job.step >= 5, what="the job to make progress")
    t = time.monotonic()
    job.cancel()
    assert job.wait(timeout=30) == "cancelled"
    assert time.monotonic() - t < 15
    ckpts = job.checkpoints()
    assert ckpts and 5 <= ckpts[-1] < 100_000, "cancel saved a checkpoint of where it stopped"
    job.resume(steps=ckpts[-1] + 10)
    assert job.wait(timeout=120) == "succeeded" and job.step == ckpts[-1] + 10


def test_jobs_wanting_the_same_devices_queue_by_priority_and_all_finish(digits):
    first = aios.train("first", dataset="digits", devices=8, **SMALL)
    low = aios.train("low", dataset="digits", devices=8, **SMALL)
    high = aios.train("high", dataset="digits", devices=4, priority=5, **SMALL)
    assert first.state == "running" and low.state == "queued" and high.state == "queued"
    queue = [q["name"] for q in aios.devices()["queue"]]
    assert queue == ["high", "low"]
    for j in (first, high, low):
        assert j.wait(timeout=240) == "succeeded", j.log_tail()
    assert (
        catalog().one("SELECT started FROM jobs WHERE name='high'")[0]
        < catalog().one("SELECT started FROM jobs WHERE name='low'")[0]
    )


def test_job_survives_the_death_of_the_process_that_launched_it(digits, aios_home):
    code = (
        "import aios_lab as aios, time\n"
        "aios.train('orphan', dataset='digits', devices=2, model='mlp', batch=64, steps=80, checkpoint_every=20)\n"
        "time.sleep(60)\n"
    )
    launcher = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "AIOS_HOME": str(aios_home)})
    wait_for(lambda: catalog().one("SELECT state FROM jobs WHERE name='orphan'") is not None, what="the job row")
    job = aios.job("orphan")
    wait_for(lambda: job.step > 0, what="the first steps")
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    assert job.wait(timeout=180) == "succeeded"


def test_bad_input_is_refused_and_writes_nothing(digits):
    with pytest.raises(AiosError, match="no dataset|unknown dataset"):
        aios.train("x", dataset="nope", model="mlp")
    with pytest.raises(AiosError, match="unknown model"):
        aios.train("x", dataset="digits", model="nonexistent")
    with pytest.raises(AiosError, match="this machine has 8 cpu device"):
        aios.train("x", dataset="digits", model="mlp", devices=9)
    with pytest.raises(AiosError, match="not divisible by the 8"):
        aios.train("x", dataset="digits", model="mlp", devices=8, batch=100)
    with pytest.raises(AiosError, match="invalid job name"):
        aios.train("Bad Name", dataset="digits", model="mlp")
    with pytest.raises(AiosError, match="--shard"):
        aios.train("x", dataset="digits", model="mlp", shard="tp")
    assert catalog().query("SELECT * FROM jobs") == []
    aios.train("dup", dataset="digits", devices=1, model="mlp", steps=5, batch=8).wait(60)
    with pytest.raises(AiosError, match="exists already"):
        aios.train("dup", dataset="digits", model="mlp")


def test_a_nan_loss_fails_the_job_and_keeps_the_last_good_checkpoint(digits):
    job = aios.train(
        "nan",
        dataset="digits",
        devices=2,
        model="mlp",
        optimizer="sgd",
        lr=1e30,
        clip=None,
        batch=64,
        steps=50,
        checkpoint_every=1,
        warmup=0,
    )
    assert job.wait(timeout=120) == "failed"
    assert "loss became" in job.error and "checkpoint" in job.error
    for step in job.checkpoints():
        for leaf in __import__("jax").tree.leaves(job.params(step)):
            assert np.isfinite(leaf).all()


def test_magics_train_jobs_logs_cancel(ip, digits):
    job = ip.run_line_magic("aios", "train m1 --dataset digits --model mlp --devices 2 --steps 40 --batch 32 --wait")
    assert job.name == "m1" and job.state == "succeeded"  # --wait displays the live view and blocks
    table = ip.run_line_magic("aios", "jobs")
    assert "m1" in table._repr_html_() and "succeeded" in str(table)
    assert "succeeded" in str(ip.run_line_magic("aios", "logs m1 --tail 5"))
    widget = ip.run_line_magic("aios", "job m1").widget()
    assert widget.progress.value == 40 and "succeeded" in widget.header.value and widget.cancel_button.disabled
    assert "<polyline" in widget.chart.value
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="this machine has 8"):
        ip.run_line_magic("aios", "train m2 --dataset digits --model mlp --devices 99")
    with pytest.raises(UsageError, match="no job named"):
        ip.run_line_magic("aios", "cancel ghost")


def test_widget_follows_a_running_job_and_cancels_it(digits):
    from aios_lab.widgets import JobWidget

    job = aios.train("w", dataset="digits", devices=2, model="mlp", batch=64, steps=100_000, checkpoint_every=10_000)
    view = JobWidget(job, interval=0.2)
    wait_for(lambda: view.progress.value > 0, what="the widget to show progress")
    assert not view.cancel_button.disabled
    view.cancel_button.click()
    wait_for(lambda: "cancelled" in view.header.value, timeout=30, what="the widget to show cancelled")
    assert view.cancel_button.disabled
