"""``python -m aios_lab.sweeps.driver NAME``: the detached process that runs a sweep to its end.

It asks Optuna for settings, queues each trial as an ordinary job (``NAME-t03``) through ``aios.train``, at most
as many at once as the machine has room for (devices // devices per trial), and tells Optuna how each ended:
its last value of the sweep's metric (succeeded), pruned (its worker reported to the pruner and stopped), or
failed. The trials' workers do the reporting themselves (``aios_lab.worker_hooks``), so a trial stops at the
evaluation the pruner rejects, not a poll later.

It outlives the kernel that started it (own session), holds ``AIOS_HOME/sweeps/NAME/driver.lock`` for its life
(a second driver exits at once), and resumes where the journal and the catalog say the sweep is, so a driver
started again after a crash or a reboot (``Sweep.wait``) adopts the trials in flight.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

from optuna.trial import TrialState

from .. import config, metric_names as mn
from ..errors import AiosError, NotFound
from . import store, study as studies
from .space import from_json

POLL_S = 0.25
KEEPER_S = 5.0
FINAL = ("succeeded", "pruned", "failed", "cancelled")  # job states that end a trial (as the trial's state)


def job_name(name: str, number: int, trials: int) -> str:
    """``NAME-t03``: the trial's job (numbers padded to the sweep's size)."""
    return f"{name}-t{number:0{max(2, len(str(trials - 1)))}d}"


def launch(name: str) -> int:
    """Start the sweep's driver in its own session (it outlives the caller); returns its pid."""
    log = studies.folder(name) / "driver.log"
    with config.open_private(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aios_lab.sweeps.driver", name],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "AIOS_HOME": str(config.home())},
        )
    store.update(name, pid=proc.pid)
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it if we are still around
    return proc.pid


class Driver:
    """One sweep's loop: watch the trials in flight, start new ones, stop them all on a cancel."""

    def __init__(self, name: str):
        self.name = name
        self.cfg = store.row(name)["config"]
        self.study = studies.load(name, self.cfg)
        self.space = from_json(self.cfg["space"])
        self.split, self.metric = self.cfg["split"], self.cfg["metric_name"]
        self.seen: dict[int, int] = {}  # trial number -> last step of the metric read
        self.kept = 0.0

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> str:
        self._forget_orphans()
        while True:
            r = store.row(self.name)
            if r is None:
                return "deleted"
            if r["cancel_requested"]:
                return self._cancel_all()
            active = self._watch()
            asked = len(self.study.get_trials(deepcopy=False))
            if asked >= self.cfg["trials"] and not active:
                return self._finish()
            while len(active) < self.cfg["parallel"] and asked < self.cfg["trials"]:
                if self._start_trial():
                    active.append(asked)
                asked += 1
            self._keep_queue_moving()
            time.sleep(POLL_S)

    def _forget_orphans(self) -> None:
        """A trial asked for by a driver that died before recording it has no job: it failed."""
        recorded = {t["number"] for t in store.trials(self.name)}
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number not in recorded:
                self.study.tell(t.number, state=TrialState.FAIL)

    def _keep_queue_moving(self) -> None:
        if time.monotonic() - self.kept > KEEPER_S:
            from ..jobs import keeper

            keeper.ensure()
            self.kept = time.monotonic()

    # -- trials ---------------------------------------------------------------------------------
    def _start_trial(self) -> bool:
        """Ask Optuna for the next settings and queue them as a job; False if the job was refused."""
        from ..jobs import train
        from ..train.config import TrainConfig

        t = self.study.ask(fixed_distributions=self.space)
        job = job_name(self.name, t.number, self.cfg["trials"])
        store.put_trial(self.name, t.number, job, t.params, "running")
        fields = TrainConfig.defaults()
        options = {**self.cfg["options"], **{k: v for k, v in t.params.items() if k in fields}}
        model_config = {**self.cfg["model_config"], **{k: v for k, v in t.params.items() if k not in fields}}
        try:
            train(
                job,
                dataset=self.cfg["dataset"],
                dataset_version=self.cfg["dataset_version"],
                model=self.cfg["model"],
                model_config=model_config,
                devices=self.cfg["devices_per_trial"],
                priority=self.cfg["priority"],
                **options,
            )
        except AiosError as exc:
            self.study.tell(t.number, state=TrialState.FAIL)
            store.set_trial(self.name, t.number, state="failed", error=str(exc))
            print(f"[aios] trial {t.number} ({job}) refused: {exc}", flush=True)
            return False
        print(f"[aios] trial {t.number}: {job} {t.params}", flush=True)
        return True

    def _watch(self) -> list[int]:
        """Read each trial in flight; tell Optuna about those whose job ended. Returns the numbers still going."""
        from ..jobs import job as get_job, records

        active = []
        for t in store.trials(self.name):
            if t["state"] != "running":
                continue
            number = t["number"]
            try:
                rows = get_job(t["job"]).metrics(since_step=self.seen.get(number, -1))
            except NotFound:  # the job was deleted under the sweep
                self._end_trial(number, "failed", None, error="its job was deleted")
                continue
            value = t["value"]
            for row in rows:
                if row.get(mn.SPLIT) == (None if self.split == "train" else self.split) and _finite(row, self.metric):
                    value = float(row[self.metric])
                    self.seen[number] = row[mn.STEP]
            j = records.row(t["job"])
            store.set_trial(self.name, number, value=value, step=j["step"])
            ended = j["state"] in FINAL or (j["state"] == "interrupted" and not _will_resume(j))
            if not ended:
                active.append(number)
                continue
            state = j["state"] if j["state"] in FINAL else "failed"
            if state == "succeeded" and value is None:
                state, why = "failed", f"it never reported {self.cfg['metric']}"
            else:
                why = j["error"]
            self._end_trial(number, state, value, error=why)
        return active

    def _end_trial(self, number: int, state: str, value: float | None, error: str | None = None) -> None:
        if state == "succeeded":
            self.study.tell(number, value)
        else:
            self.study.tell(number, state=TrialState.PRUNED if state == "pruned" else TrialState.FAIL)
        store.set_trial(self.name, number, state=state, value=value, error=error)
        print(f"[aios] trial {number} {state}" + (f": {value:.5g}" if value is not None else ""), flush=True)

    # -- endings --------------------------------------------------------------------------------
    def _cancel_all(self) -> str:
        """Cancel every trial in flight (each checkpoints and stops), wait for them, end the sweep cancelled."""
        from ..jobs import job as get_job

        for t in store.trials(self.name):
            if t["state"] == "running" and t["job_state"] in ("queued", "running", "interrupted"):
                with contextlib.suppress(AiosError):
                    get_job(t["job"]).cancel()
        while self._watch():
            self._keep_queue_moving()
            time.sleep(POLL_S)
        store.update(self.name, state="cancelled", ended=time.time())
        return "cancelled"

    def _finish(self) -> str:
        done = [t for t in store.trials(self.name) if t["state"] == "succeeded"]
        if done:
            store.update(self.name, state="succeeded", ended=time.time(), error=None)
            return "succeeded"
        why = "no trial finished; `%aios logs " + job_name(self.name, 0, self.cfg["trials"]) + "` shows why"
        store.update(self.name, state="failed", ended=time.time(), error=why)
        return "failed"


def _finite(row: dict[str, Any], name: str) -> bool:
    v = row.get(name)
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _will_resume(j: dict[str, Any]) -> bool:
    return j["attempts"] < j["config"].get("max_retries", 0) and not j["cancel_requested"]


def main(name: str) -> int:
    config.private_umask()
    with config.open_private(studies.folder(name) / "driver.lock", "ab") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[aios] another driver runs sweep {name}", flush=True)
            return 0
        store.update(name, pid=os.getpid())
        print(f"[aios] sweep {name} driver {os.getpid()} started", flush=True)
        try:
            state = Driver(name).run()
        except Exception as exc:
            traceback.print_exc()
            why = f"the sweep's driver failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            store.update(name, state="failed", error=why, ended=time.time())
            return 1
        print(f"[aios] sweep {name} {state}", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
