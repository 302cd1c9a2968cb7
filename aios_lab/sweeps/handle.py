"""``Sweep``: a handle on one sweep, read from the catalog, usable from any process (like ``Job``).

Reads only read (the sweep's row, its trials' rows, their jobs' rows and metrics). ``wait`` and ``resume``
start the sweep's driver again if it died while the sweep was running, so a sweep goes on after a reboot as
soon as someone waits on it; ``cancel`` stops every trial (each checkpoints) and ends the sweep.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from ..catalog import catalog
from ..errors import AiosError, NotFound
from . import store

RESTART_GRACE_S = 30.0  # a sweep this fresh with no driver pid yet is being launched
WAIT_CHECK_S = 5.0


@dataclass(frozen=True)
class Trial:
    """One trial: its job, settings, state (the job's, or how Optuna saw it end) and last metric value."""

    number: int
    job: str
    state: str
    params: dict[str, Any]
    value: float | None
    step: int | None
    steps: int | None
    n_devices: int | None
    error: str | None = None

    def handle(self):
        """The trial's ``Job``."""
        from ..jobs import job

        return job(self.job)


def _trial(t: dict[str, Any]) -> Trial:
    # while the job runs its own state says most (queued, running); once Optuna heard how it ended, that
    state = t["job_state"] if t["state"] == "running" and t["job_state"] else t["state"]
    return Trial(
        t["number"],
        t["job"],
        state,
        t["params"],
        t["value"],
        t["job_step"] if t["job_step"] is not None else t["step"],
        t["job_steps"],
        t["n_devices"],
        t["error"],
    )


class Sweep:
    """A sweep by name. Every attribute reads the catalog, so it is always current.

    >>> sw = aios.sweep("lr-width"); sw.wait(); sw.best(); sw.table()
    """

    def __init__(self, name: str):
        self.name = name
        self.shown = False
        if store.row(name) is None:
            raise NotFound(f"no sweep named {name!r}; `%aios sweeps` lists them")

    def _row(self) -> dict[str, Any]:
        r = store.row(self.name)
        if r is None:
            raise NotFound(f"sweep {self.name!r} was deleted")
        return r

    @property
    def state(self) -> str:
        return self._row()["state"]

    @property
    def config(self) -> dict[str, Any]:
        return self._row()["config"]

    @property
    def done(self) -> bool:
        return self.state in store.TERMINAL

    # -- trials -----------------------------------------------------------------------------
    def trials(self) -> list[Trial]:
        """Every trial asked for so far, by number."""
        return [_trial(t) for t in store.trials(self.name)]

    def best(self) -> Trial | None:
        """The finished trial with the best value of the sweep's metric (None until one finished)."""
        cfg = self.config
        done = [t for t in self.trials() if t.state == "succeeded" and t.value is not None]
        if not done:
            return None
        pick = min if cfg["goal"] == "min" else max
        return pick(done, key=lambda t: t.value)

    def ranked(self) -> list[Trial]:
        """Finished trials, best first."""
        cfg = self.config
        done = [t for t in self.trials() if t.state == "succeeded" and t.value is not None]
        return sorted(done, key=lambda t: t.value, reverse=cfg["goal"] == "max")

    def top(self, n: int = 3) -> list[Trial]:
        """The ``n`` best trials to compare: finished ones best first, then (if fewer finished) pruned ones by
        the last value they reported, which came from fewer steps."""
        cfg = self.config
        pruned = [t for t in self.trials() if t.state == "pruned" and t.value is not None]
        pruned.sort(key=lambda t: t.value, reverse=cfg["goal"] == "max")
        return (self.ranked() + pruned)[:n]

    def device_steps(self) -> int:
        """Steps run by the trials so far, times the devices each held: what the sweep cost the machine."""
        return sum((t.step or 0) * (t.n_devices or 0) for t in self.trials())

    def curves(self) -> dict[str, list[tuple[int, float]]]:
        """``{job: [(step, value), ...]}`` of the sweep's metric for every trial."""
        cfg = self.config
        jobs = [t.job for t in self.trials()]
        if not jobs:
            return {}
        marks = ",".join("?" * len(jobs))
        split = None if cfg["split"] == "train" else cfg["split"]
        found = catalog().query(
            f"SELECT job, step, data FROM metrics WHERE job IN ({marks}) AND split IS ? ORDER BY rowid",
            (*jobs, split),
        )
        out: dict[str, list[tuple[int, float]]] = {j: [] for j in jobs}
        for r in found:
            v = json.loads(r["data"]).get(cfg["metric_name"])
            if isinstance(v, (int, float)):
                out[r["job"]].append((r["step"], float(v)))
        return out

    def table(self):
        """The trials as a table: job, state, settings, metric, step."""
        from ..render import Table

        cfg = self.config
        keys = list(cfg["space"])
        best = self.best()
        rows = [
            (
                t.job + (" *" if best and t.number == best.number else ""),
                t.state,
                *(t.params.get(k) for k in keys),
                t.value,
                f"{t.step}/{t.steps}" if t.steps else t.step,
            )
            for t in self.trials()
        ]
        title = f"sweep {self.name}: {self.state}, {cfg['metric']} ({cfg['goal']})" + (
            f", best {best.job} {best.value:.5g}" if best else ""
        )
        return Table(["trial", "state", *keys, cfg["metric"], "step"], rows, title=title, empty="no trial yet")

    # -- control ----------------------------------------------------------------------------
    def wait(self, timeout: float | None = None, poll: float = 0.5) -> str:
        """Block until the sweep ends (or ``timeout`` seconds pass); returns its state. Restarts a dead driver."""
        deadline = None if timeout is None else time.monotonic() + timeout
        checked = time.monotonic()
        while True:
            r = self._row()
            if r["state"] in store.TERMINAL or (deadline is not None and time.monotonic() > deadline):
                return r["state"]
            if time.monotonic() - checked > WAIT_CHECK_S:
                self._ensure_driver(r)
                checked = time.monotonic()
            time.sleep(poll)

    def resume(self) -> Sweep:
        """Start the driver again if it died while the sweep was running (a reboot, a kill)."""
        self._ensure_driver(self._row())
        return self

    def _ensure_driver(self, r: dict[str, Any]) -> None:
        from ..jobs import keeper
        from .driver import launch

        keeper.ensure()
        launching = not r["pid"] and time.time() - r["updated"] < RESTART_GRACE_S  # its pid is recorded next
        if r["state"] == "running" and not store.driver_alive(r) and not launching:
            launch(self.name)

    def cancel(self) -> str:
        """Stop the sweep: every trial in flight is cancelled (it checkpoints and stops); no new trial starts."""
        from ..jobs import job

        r = self._row()
        if r["state"] in store.TERMINAL:
            return r["state"]
        store.update(self.name, cancel_requested=1)
        for t in self.trials():
            if t.state in ("queued", "running", "interrupted"):
                with contextlib.suppress(AiosError):
                    job(t.job).cancel()
        if not store.driver_alive(r):  # nobody else will end it
            for t in store.trials(self.name):
                if t["state"] == "running":
                    store.set_trial(self.name, t["number"], state="cancelled")
            store.update(self.name, {"state": "running"}, state="cancelled", ended=time.time())
        catalog().audit("sweep.cancel", self.name)
        return self.state

    # -- results ----------------------------------------------------------------------------
    def compare(self, top: int = 3):
        """``aios.compare`` of the ``top`` best trials (see :meth:`top`)."""
        from ..compare import compare

        best = self.top(top)
        if not best:
            raise NotFound(f"sweep {self.name!r} has no trial with a value of {self.config['metric']} yet")
        return compare(*(t.job for t in best))

    def publish(self, as_: str, alias: str | None = None, checkpoint: str | int | None = None):
        """``%aios publish SWEEP --best --as MODEL``: the best trial's checkpoint as a model version, with the
        sweep (name, metric, goal, the trial's settings and value) in its lineage."""
        from ..registry import publish

        best = self.best()
        if best is None:
            raise NotFound(f"sweep {self.name!r} has no finished trial yet; `%aios sweep {self.name}` shows them")
        cfg = self.config
        sweep = {
            "name": self.name,
            "trial": best.number,
            "params": best.params,
            "metric": cfg["metric"],
            "goal": cfg["goal"],
            "value": best.value,
            "over": cfg["over"],
            "trials": len(self.trials()),
        }
        return publish(best.job, checkpoint=checkpoint, as_=as_, alias=alias, lineage_extra={"sweep": sweep})

    # -- views ------------------------------------------------------------------------------
    def to_json(self, curves: bool = True) -> dict[str, Any]:
        """The sweep as the widget and the sidebar show it (see docs/architecture.md, "The sweep JSON")."""
        from .space import describe, from_json

        r = self._row()
        cfg = r["config"]
        trials = self.trials()
        best = self.best()
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.state] = counts.get(t.state, 0) + 1
        return {
            "name": self.name,
            "state": r["state"],
            "driver_alive": store.driver_alive(r),
            "error": r["error"],
            "created": r["created"],
            "ended": r["ended"],
            "updated": r["updated"],
            "dataset": cfg["dataset"],
            "model": cfg["model"],
            "metric": cfg["metric"],
            "goal": cfg["goal"],
            "early_stop": cfg["early_stop"],
            "sampler": cfg["sampler"],
            "trials_total": cfg["trials"],
            "devices_per_trial": cfg["devices_per_trial"],
            "parallel": cfg["parallel"],
            "steps": cfg["steps"],
            "space": {k: describe(d) for k, d in from_json(cfg["space"]).items()},
            "trials": [{**asdict(t), "best": bool(best and t.number == best.number)} for t in trials],
            "best": asdict(best) if best else None,
            "counts": counts,
            "device_steps": sum((t.step or 0) * (t.n_devices or 0) for t in trials),
            "curves": {job: [list(p) for p in pts] for job, pts in self.curves().items()} if curves else None,
        }

    def widget(self):
        from .widget import SweepWidget

        return SweepWidget(self)

    def _ipython_display_(self):
        from IPython.display import display

        if not self.shown:
            display(self.widget())

    def __repr__(self) -> str:
        return f"<Sweep {self.name} {self.state} {len(self.trials())}/{self.config['trials']} trials>"


__all__ = ["Sweep", "Trial"]
