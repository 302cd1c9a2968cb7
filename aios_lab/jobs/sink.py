"""Metric rows from a worker into the catalog at a bounded rate (one transaction per flush)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from .. import metric_names as mn
from ..catalog import catalog
from ..event_files import EventLog
from .paths import job_dir


class MetricsSink:
    """Buffers rows and writes them at most every ``interval`` seconds, updating the job's step."""

    def __init__(self, job: str, interval: float = 0.5):
        self.job, self.interval = job, interval
        self._rows: list[dict[str, Any]] = []
        self._step = None
        self._last = 0.0
        self._lock = threading.Lock()
        self.events = EventLog(job_dir(job))  # the same rows as TensorBoard event files

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._rows.append(row)
            if row.get(mn.SPLIT) is None:
                self._step = int(row[mn.STEP])
        self.events.add(row)
        if time.monotonic() - self._last >= self.interval:
            self.flush()

    def progress(self, step: int) -> None:
        """The step reached, even between logged rows."""
        with self._lock:
            self._step = step
        if time.monotonic() - self._last >= self.interval:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            rows, self._rows, step = self._rows, [], self._step
        self._last = time.monotonic()
        self.events.flush()
        if not rows and step is None:
            return
        with catalog().tx() as db:
            db.executemany(
                "INSERT INTO metrics (job, step, time, split, data) VALUES (?,?,?,?,?)",
                [
                    (
                        self.job,
                        int(r[mn.STEP]),
                        float(r.get(mn.TIME, time.time())),
                        r.get(mn.SPLIT),
                        json.dumps({k: v for k, v in r.items() if k not in (mn.STEP, mn.TIME, mn.SPLIT)}),
                    )
                    for r in rows
                ],
            )
            if step is not None:
                db.execute("UPDATE jobs SET step=?, updated=? WHERE name=?", (step, time.time(), self.job))

    def forget_after(self, step: int) -> None:
        """Drop rows past ``step`` (a resumed run logs those steps again)."""
        self.events.purge_step = step
        with catalog().tx() as db:
            db.execute("DELETE FROM metrics WHERE job=? AND step>?", (self.job, step))
            db.execute("UPDATE jobs SET step=? WHERE name=?", (step, self.job))
