"""Checkpoints saved from a thread: the training loop hands over a device copy of the state and goes on.

Used for small states (a copy doubles the state's memory while it is being saved); the loop saves large
ones, the final one and one at a stop in place.
"""

from __future__ import annotations

import functools
import queue
import threading
from typing import Any

import jax

from . import step as steplib
from .checkpoints import Checkpoints

CHECKPOINT_SPAN = "aios.checkpoint"  # what a profile's trace calls the time the training loop spends saving


class BackgroundSaver:
    """Saves checkpoints of state snapshots from a thread, so the loop never waits for orbax.

    A save goes ahead only when every loss up to its step and every parameter is finite; otherwise it is
    skipped (the loop raises TrainingDiverged when it reads the same sums). One save at a time.
    """

    def __init__(self, ckpts: Checkpoints, task: str):
        self.ckpts, self.task, self.error = ckpts, task, None
        self.jobs: queue.Queue = queue.Queue(maxsize=1)
        self.thread = threading.Thread(target=self._work, name="aios-checkpoint", daemon=True)
        self.thread.start()

    @functools.partial(jax.profiler.annotate_function, name=CHECKPOINT_SPAN)
    def submit(self, step: int, snapshot: Any, finite: Any, sums: list, evals: list | None) -> None:
        """Queue a save of ``snapshot`` at ``step`` (waits while the previous one is still being handed over)."""
        if self.error is not None:
            raise self.error
        self.jobs.put((step, snapshot, finite, sums, evals))

    def close(self, raise_error: bool = True) -> None:
        """Finish the queued saves and stop the thread."""
        self.jobs.put(None)
        self.thread.join()
        if self.error is not None and raise_error:
            raise self.error

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            step, snapshot, finite, sums, evals = job
            if self.error is not None:
                continue
            try:
                if bool(finite) and all(steplib.sums_clean(s) for s in jax.device_get(sums)):
                    metrics = steplib.eval_metrics(steplib.eval_summary(evals, self.task), self.task) if evals else None
                    self.ckpts.save(step, snapshot, metrics=metrics)
            except BaseException as exc:  # handed to the loop at its next checkpoint or at the end
                self.error = exc
            del job, snapshot


__all__ = ["CHECKPOINT_SPAN", "BackgroundSaver"]
