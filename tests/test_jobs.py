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
from aios_lab import metric_names as mn
from aios_lab.catalog import catalog
from aios_lab.cli import main as cli
from aios_lab.errors import AiosError, Conflict, InvalidInput, NotFound

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
    # one vocabulary: the newest train row and the newest eval row per split, under metric_names' keys
    assert info["metrics"]["train"] == {k: v for k, v in train_rows[-1].items()}
    assert info["metrics"]["val"] == {k: v for k, v in evals[-1].items() if k != mn.SPLIT}
    assert info["metric_names"][:2] == [mn.LOSS, mn.ACCURACY] and mn.EXAMPLES_PER_S in info["metric_names"]
    assert info[mn.LOSS] == train_rows[-1][mn.LOSS] and info[mn.EXAMPLES_PER_S] == train_rows[-1][mn.EXAMPLES_PER_S]
    assert info["disk_bytes"] > 0 and info["task"] == "classification"
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
    kill_at = random.Random().randint(30, 200)  # the step is published every ~0.5 s: room to land mid-run
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


def state_of(name):
    r = catalog().one("SELECT state FROM jobs WHERE name=?", (name,))
    return r[0] if r else None


def test_the_queue_moves_with_no_notebook_and_a_killed_job_comes_back(digits, aios_home):
    """Seam 1: only raw catalog reads here; the launcher is gone; the keeper reaps, requeues and starts."""
    code = (
        "import aios_lab as aios\n"
        "kw = dict(model='mlp', batch=48, lr=3e-3)\n"
        "aios.train('a', dataset='digits', devices=6, steps=160, checkpoint_every=20, eval_every=160, **kw)\n"
        "aios.train('b', dataset='digits', devices=4, steps=30, checkpoint_every=10, eval_every=30, **kw)\n"
    )
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "AIOS_HOME": str(aios_home)}, check=True)
    assert state_of("a") == "running" and state_of("b") == "queued"
    a_job = aios.job("a")  # its checkpoints are read from disk: no scheduling, old code or new
    wait_for(lambda: a_job.checkpoints()[-1:] >= [40], 180, what="job a's checkpoint at step 40")
    r = catalog().one("SELECT supervisor_pid, pid FROM jobs WHERE name='a'")
    for pid in (r["supervisor_pid"], r["pid"]):  # the supervisor first, so nobody restarts the worker
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: state_of("a") == "succeeded" and state_of("b") == "succeeded", 240, what="both jobs to finish")
    a = catalog().one("SELECT attempts, started FROM jobs WHERE name='a'")
    assert a["attempts"] == 1, "the keeper requeued the dead job once"
    assert catalog().one("SELECT started FROM jobs WHERE name='b'")[0] > a["started"]
    assert "resuming from the checkpoint" in a_job.log_tail(400)


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
    with pytest.raises(Conflict, match="exists already"):
        aios.train("dup", dataset="digits", model="mlp")
    with pytest.raises(NotFound, match="no job named"):
        aios.job("ghost")


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


@pytest.mark.parametrize(
    "flags, message",
    [
        (dict(steps=10**20), "--steps must be a whole number from 1 to 1,000,000,000, not 1e+20"),
        (dict(steps=1e20), "--steps must be a whole number"),
        (dict(steps=2.5), "--steps must be a whole number"),
        (dict(batch=2**40), "--batch must be"),
        (dict(lr=float("nan")), "--lr must be a number above 0"),
        (dict(lr=1e39), "--lr must be"),
        (dict(priority=10**30), "--priority must be"),
        (dict(devices=10**20), "--devices 1e+20: this machine has 8 cpu device"),
        (dict(seed=-1), "--seed must be"),
        (dict(seed=2**70), "--seed must be"),
        (dict(max_retries=10**9), "--max-retries must be"),
        (dict(checkpoint_every=10**19), "--checkpoint-every must be"),
        (dict(weight_decay=float("inf")), "--weight-decay must be"),
        (dict(processes=True), "--processes must be"),
        (dict(dataset_version=2**63), "--dataset-version must be"),
        (dict(n_devices=3), "unknown training option n_devices"),
    ],
)
def test_numbers_out_of_bounds_are_one_line_errors_that_write_nothing(digits, flags, message):
    """Defect 6: numbers past SQLite's 64 bits or JAX's int32/float32 gave OverflowError tracebacks."""
    with pytest.raises(InvalidInput, match=message.replace("+", r"\+")):
        aios.train("x", dataset="digits", model="mlp", **flags)
    assert catalog().query("SELECT * FROM jobs") == []


def test_cli_and_resume_refuse_huge_numbers_in_one_line(digits, capsys):
    """Defect 6: `aios train --steps 1e20`, `aios resume --steps 1e20`, Job.resume(steps=1e30)."""
    assert cli(["train", "big", "--dataset", "digits", "--model", "mlp", "--steps", "100000000000000000000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--steps must be a whole number" in err and "Traceback" not in err
    assert cli(["train", "big", "--dataset", "digits", "--model", "mlp", "--steps", "1e20"]) == 2
    assert "--steps must be a whole number" in capsys.readouterr().err
    job = aios.train("small", dataset="digits", devices=1, model="mlp", steps=5, batch=8)
    assert job.wait(timeout=120) == "succeeded"
    assert cli(["resume", "small", "--steps", "1e20"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--steps must be a whole number" in err
    for bad in (1e30, float("nan"), "many", 10**40):
        with pytest.raises(InvalidInput, match="--steps must be"):
            job.resume(steps=bad)
    with pytest.raises(InvalidInput, match="--tail must be"):
        job.log_tail(-1)
    with pytest.raises(InvalidInput, match="--since-step must be"):
        job.metrics(since_step=10**30)
    assert job.state == "succeeded" and job.steps == 5
    assert cli(["resume", "small", "--steps", "1e1"]) == 0, "a whole number written as 1e1 is fine"
    assert job.wait(timeout=120) == "succeeded" and job.step == 10


def test_a_launch_that_fails_for_any_reason_fails_the_job_and_frees_its_devices(digits, aios_home, tmp_path):
    """Defect 10: only OSError was caught; an AiosError left the job "running" with no process."""
    first = aios.train("first", dataset="digits", devices=2, model="mlp", batch=64, steps=100_000)
    trap = aios.train("trap", dataset="digits", devices=8, model="mlp", steps=5, batch=8)
    assert trap.state == "queued"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (aios_home / "jobs" / "trap").symlink_to(outside)  # while it waits, its folder becomes a link out of AIOS_HOME
    first.cancel()
    assert first.wait(timeout=60) == "cancelled"
    wait_for(lambda: trap.state != "queued" and trap.pid is None, what="the queue to move on")
    assert trap.state == "failed" and "could not start the job" in trap.error and "AIOS_HOME" in trap.error
    assert all(d["job"] is None for d in aios.devices()["devices"])
    assert trap.to_json()["disk_bytes"] == 0
    after = aios.train("after", dataset="digits", devices=8, model="mlp", steps=2, batch=8)
    assert after.wait(timeout=120) == "succeeded", "the devices were free for the next job"
    trap.delete()
    assert not (aios_home / "jobs" / "trap").is_symlink() and outside.is_dir(), "the link went, not what it led to"


def test_job_delete_refuses_running_queued_and_published_jobs_unless_forced(ip, digits, aios_home):
    """Defect 15: jobs (checkpoints, log, variants) could not be deleted; disk use was not shown."""
    from IPython.core.error import UsageError

    job = aios.train("gone", dataset="digits", devices=2, model="mlp", batch=32, steps=100_000, checkpoint_every=20)
    waiting = aios.train("waiting", dataset="digits", devices=8, model="mlp", steps=5, batch=8)
    assert waiting.state == "queued"
    with pytest.raises(Conflict, match="is queued.*--force"):
        aios.delete_job("waiting")
    assert aios.delete_job("waiting", force=True) == 0 and aios.devices()["queue"] == []
    wait_for(lambda: job.checkpoints(), what="a first checkpoint")
    for force in (False, True):
        with pytest.raises(Conflict, match="is running; `%aios cancel gone`"):
            job.delete(force=force)
    job.cancel()
    assert job.wait(timeout=60) == "cancelled"
    aios.compress("gone", "int8")
    aios.publish("gone", as_="keep")
    assert catalog().one("SELECT COUNT(*) FROM variants WHERE job='gone'")[0] == 1
    with pytest.raises(UsageError, match="lineage of model keep:v1.*--force"):
        ip.run_line_magic("aios", "job delete gone")
    table = ip.run_line_magic("aios", "jobs")
    assert "disk" in table.columns and "MiB" in str(table)
    disk = job.to_json()["disk_bytes"]
    assert disk > 0
    said = ip.run_line_magic("aios", "job delete gone --force")
    assert "job gone deleted" in str(said)
    for table in ("jobs", "variants"):
        assert (
            catalog().one(f"SELECT COUNT(*) FROM {table} WHERE {'name' if table == 'jobs' else 'job'}='gone'")[0] == 0
        )
    assert catalog().one("SELECT COUNT(*) FROM metrics WHERE job='gone'")[0] == 0
    assert not (aios_home / "jobs" / "gone").exists()
    audit = catalog().one("SELECT details FROM audit WHERE action='job.delete' AND object='gone'")
    assert audit is not None and '"force": true' in audit[0] and "keep:v1" in audit[0]
    assert aios.registry.load("keep").predict(digits.load("test")[0][:4]).shape == (4, 10), "the model stays"
    with pytest.raises(NotFound):
        aios.job("gone")
    # the name is free again, with nothing left over from the old job
    again = aios.train("gone", dataset="digits", devices=1, model="mlp", steps=5, batch=8, checkpoint_every=5)
    assert again.wait(timeout=120) == "succeeded" and again.checkpoints() == [5]


def test_defaults_and_choices_come_from_the_training_code(ip, digits):
    """Seam 3: aios.train and the verbs restated TrainConfig's defaults (and disagreed) and the choices."""
    from aios_lab.train import optim, sharding
    from aios_lab.train.config import TrainConfig

    default = TrainConfig()
    api_job = aios.train("api", dataset="digits", devices=1, model="mlp")
    verb_job = ip.run_line_magic("aios", "train verb --dataset digits --model mlp --devices 1")
    for job in (api_job, verb_job):
        job.cancel()
        cfg = job.config["train"]
        for field in ("steps", "batch", "lr", "optimizer", "shard", "precision", "weight_decay", "clip", "seed"):
            assert cfg[field] == getattr(default, field), field
        assert job.steps == default.steps
    help_text = aios_lab_help("train")
    assert f"{', '.join(optim.OPTIMIZERS)} (default {default.optimizer})" in help_text
    assert f"{', '.join(sharding.MODES)}:" in help_text and f"(default {default.steps})" in help_text
    for job in (api_job, verb_job):
        assert job.wait(timeout=60) == "cancelled"


def aios_lab_help(verb_name: str) -> str:
    from aios_lab.verbs import load_all

    return " ".join(load_all()[verb_name].help().split())
