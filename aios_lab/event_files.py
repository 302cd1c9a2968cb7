"""A job's metrics as TensorBoard event files, so ``tensorboard --logdir AIOS_HOME/jobs`` shows every job.

Written beside the catalog rows by the job's metrics sink, with tensorboardX's record writer (no TensorFlow):
each numeric metric of a row becomes the scalar ``SPLIT/NAME`` (``train/loss``, ``val/accuracy``,
``train/examples_per_s``) at the row's step and wall time, under ``AIOS_HOME/jobs/NAME/tensorboard/``. Events
are written in the caller's thread (tensorboardX's ``SummaryWriter`` queues them to a thread its ``flush``
does not wait for), so ``flush`` means on disk. A resumed run starts its file with a session start at the
checkpoint it resumed from (``purge_step``), so TensorBoard drops the steps after it, which that run logs again.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from pathlib import Path
from typing import Any

from . import metric_names as mn

FOLDER = "tensorboard"
_SKIP = (mn.STEP, mn.TIME, mn.SPLIT)
_FILES = itertools.count()  # two logs opened in one second by one process get files of their own


def folder(job_dir: str | os.PathLike) -> Path:
    return Path(job_dir) / FOLDER


class EventLog:
    """Scalars of metric rows into event files; the writer opens at the first row (nothing for a job with none)."""

    def __init__(self, job_dir: str | os.PathLike, purge_step: int | None = None):
        self.path, self.purge_step = folder(job_dir), purge_step
        self._writer = None

    def _open(self):
        if self._writer is None:
            from tensorboardX.event_file_writer import EventsWriter
            from tensorboardX.proto.event_pb2 import Event, SessionLog

            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._writer = EventsWriter(str(self.path / "events"), f".{os.getpid()}.{next(_FILES)}")
            if self.purge_step is not None:  # TensorBoard drops what earlier files logged from this step on
                start = SessionLog(status=SessionLog.START)
                self._writer.write_event(Event(step=self.purge_step + 1, wall_time=time.time(), session_log=start))
        return self._writer

    def add(self, row: dict[str, Any]) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        split = row.get(mn.SPLIT) or "train"
        step, wall = int(row[mn.STEP]), row.get(mn.TIME)
        values = []
        for key, value in row.items():
            if (
                key in _SKIP
                or isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                continue
            values.append(Summary.Value(tag=f"{split}/{key}", simple_value=float(value)))
        if values:
            when = time.time() if wall is None else float(wall)
            self._open().write_event(Event(step=step, wall_time=when, summary=Summary(value=values)))

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


__all__ = ["FOLDER", "EventLog", "folder"]
