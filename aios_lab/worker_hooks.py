"""What experiments ask of a running job's worker, in one object the worker calls: a sweep trial's
evaluations go to the pruner (which may stop it: the job ends ``pruned``), and a profile request is
picked up and traced without a restart.

>>> hooks = WorkerHooks("digits-t03", stop)           # in the worker's lead process
>>> train(..., on_metrics=lambda r: (sink.add(r), hooks.on_row(r)), should_stop=hooks.wrap(should_stop))
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .profiling import ProfileHook


class WorkerHooks:
    """A job's experiment hooks: pruning (sweep trials only) and profile requests."""

    def __init__(self, job: str, stop: threading.Event):
        from .sweeps.trial_hook import TrialReporter

        self.trial = TrialReporter.for_job(job, stop)
        self.profile = ProfileHook(job)

    @property
    def pruned(self) -> bool:
        """True once the sweep's pruner stopped this trial."""
        return bool(self.trial and self.trial.pruned)

    def on_row(self, row: dict[str, Any]) -> None:
        if self.trial is not None:
            self.trial.on_row(row)

    def wrap(self, should_stop: Callable[[], bool]) -> Callable[[], bool]:
        """``should_stop`` as the trainer polls it once per step, with a profile request looked for on the way."""
        tick = self.profile.tick

        def polled() -> bool:
            tick()
            return should_stop()

        return polled

    def close(self) -> None:
        """At the end of the run: finish a trace still being taken."""
        self.profile.close()


__all__ = ["WorkerHooks"]
