"""In a sweep trial's worker: report each evaluation of the sweep's metric to Optuna's pruner, and ask the
worker to stop (checkpoint, then end ``pruned``) when the pruner says so.

Optuna is imported and the study opened on a thread at start-up, so the training loop never waits for it
unless an evaluation comes first. A failure here (the sweep deleted, its journal unreadable, a resumed trial
Optuna already closed) only turns pruning off for this run; training goes on.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from .. import metric_names as mn
from . import store


class TrialReporter:
    """Reports one trial's evaluations from its worker; sets ``stop`` once the pruner rejects the trial."""

    def __init__(self, sweep: str, cfg: dict[str, Any], number: int, stop: threading.Event, steps: int | None = None):
        self.sweep, self.cfg, self.number, self.stop = sweep, cfg, number, stop
        self.steps = steps or cfg["steps"]  # the trial's own length (the space may vary it)
        self.split = None if cfg["split"] == "train" else cfg["split"]
        self.metric = cfg["metric_name"]
        self.pruned = False
        self._trial = None
        self._opened = threading.Thread(target=self._open, daemon=True)
        self._opened.start()

    @classmethod
    def for_job(cls, job: str, stop: threading.Event) -> TrialReporter | None:
        """The reporter of ``job`` if it is a sweep's trial, else None (one catalog read)."""
        t = store.trial_of_job(job)
        s = store.row(t["sweep"]) if t else None
        if s is None or (s["config"].get("early_stop") or "none") == "none":
            return None
        return cls(t["sweep"], s["config"], t["number"], stop, t["params"].get("steps"))

    def _open(self) -> None:
        try:
            from .study import trial

            self._trial = trial(self.sweep, self.cfg, self.number)
        except Exception as exc:
            print(f"[aios] sweep {self.sweep}: pruning is off for this run ({type(exc).__name__}: {exc})", flush=True)

    def on_row(self, row: dict[str, Any]) -> None:
        """Called with every metrics row; acts on the sweep's metric only."""
        value = row.get(self.metric)
        if row.get(mn.SPLIT) != self.split or not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        self._opened.join()
        if self._trial is None or self.pruned:
            return
        step = int(row[mn.STEP])
        try:
            self._trial.report(float(value), step)
            # the evaluation at the last step ends the trial: it finished, however it ranks (a last rung at
            # exactly the run's length would otherwise call a finished trial pruned)
            prune = step < self.steps and self._trial.should_prune()
        except Exception as exc:  # e.g. a resumed trial that Optuna already closed
            print(f"[aios] sweep {self.sweep}: pruning is off for this run ({type(exc).__name__}: {exc})", flush=True)
            self._trial = None
            return
        if prune:
            self.pruned = True
            print(f"[aios] pruned by sweep {self.sweep} at step {row[mn.STEP]} ({self.metric} {value:.5g})", flush=True)
            self.stop.set()


__all__ = ["TrialReporter"]
