"""Every job's metrics also land in TensorBoard event files (tensorboardX), read back here with TensorBoard's own
reader: the scalars, their steps and wall times, and a resumed run's purge of the steps it logs again."""

from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from aios_lab import event_files
from aios_lab.jobs.paths import job_dir
from aios_lab.jobs.sink import MetricsSink


def _read(folder) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def test_metrics_sink_writes_event_files_tensorboard_reads(aios_home):
    sink = MetricsSink("tb-job")
    rows = [
        {"step": s, "time": 1000.0 + s, "loss": 2.0 / s, "accuracy": s / 40, "examples_per_s": 5e3, "input_wait": 0.1}
        for s in (10, 20, 30)
    ]
    for row in rows:
        sink.add(row)
    sink.add({"step": 30, "time": 1030.5, "split": "val", "loss": 0.5, "accuracy": 0.9, "perplexity": float("nan")})
    sink.flush()
    folder = event_files.folder(job_dir("tb-job"))
    assert folder == aios_home / "jobs" / "tb-job" / "tensorboard"  # under AIOS_HOME/jobs: one --logdir for all
    acc = _read(folder)
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/accuracy", "train/examples_per_s", "train/input_wait", "val/loss"} <= tags
    assert "val/perplexity" not in tags  # not finite: left out
    loss = acc.Scalars("train/loss")
    assert [(e.step, e.wall_time) for e in loss] == [(10, 1010.0), (20, 1020.0), (30, 1030.0)]
    assert [round(e.value, 6) for e in loss] == [0.2, 0.1, round(2.0 / 30, 6)]
    assert [(e.step, e.value) for e in acc.Scalars("val/accuracy")] == [(30, 0.8999999761581421)]
    sink.events.close()

    resumed = MetricsSink("tb-job")  # a resumed run: from the checkpoint at step 20, it logs step 30 again
    resumed.forget_after(20)
    resumed.add({"step": 30, "time": 2030.0, "loss": 0.05})
    resumed.flush()
    resumed.events.close()
    loss = _read(folder).Scalars("train/loss")
    assert [(e.step, round(e.value, 6)) for e in loss] == [(10, 0.2), (20, 0.1), (30, 0.05)]


def test_no_rows_no_files(aios_home):
    sink = MetricsSink("quiet")
    sink.flush()
    assert not event_files.folder(job_dir("quiet")).exists()
