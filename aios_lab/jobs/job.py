"""``Job``: a handle on one training job, read from the catalog, usable from any process."""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

from ..catalog import catalog
from ..errors import AiosError
from . import records
from .paths import checkpoint_dir, log_path


class Job:
    """A training job by name. Every attribute reads the catalog, so it is always current.

    >>> job = aios.job("digits-mlp")
    >>> job.wait(); job.state, job.step
    """

    def __init__(self, name: str):
        self.name = name
        self.shown = False  # set once a live view of this handle is on screen
        if records.row(name) is None:
            raise AiosError(f"no job named {name!r}; `%aios jobs` lists them")

    # -- state ------------------------------------------------------------------------------
    def _row(self) -> dict[str, Any]:
        r = records.row(self.name)
        if r is None:
            raise AiosError(f"job {self.name!r} was deleted")
        return r

    def refresh(self) -> dict[str, Any]:
        """Notice dead workers (and move the queue) before reading."""
        from .scheduler import schedule

        r = self._row()
        if r["state"] in ("running", "interrupted", "queued"):
            schedule()
            r = self._row()
        return r

    @property
    def state(self) -> str:
        return self.refresh()["state"]

    @property
    def step(self) -> int:
        return self._row()["step"]

    @property
    def steps(self) -> int:
        return self._row()["steps"]

    @property
    def pid(self) -> int | None:
        return self._row()["pid"]

    @property
    def config(self) -> dict[str, Any]:
        return self._row()["config"]

    @property
    def devices(self) -> list[int]:
        return self._row()["devices"]

    @property
    def error(self) -> str | None:
        return self._row()["error"]

    @property
    def done(self) -> bool:
        return self.state in records.TERMINAL

    def wait(self, timeout: float | None = None, poll: float = 0.25) -> str:
        """Block until the job ends (or ``timeout`` seconds pass); returns its state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.state
            if state in records.TERMINAL or (state == "interrupted" and not self._will_resume()):
                return state
            if deadline is not None and time.monotonic() > deadline:
                return state
            time.sleep(poll)

    def _will_resume(self) -> bool:
        r = self._row()
        return r["attempts"] < r["config"]["max_retries"]

    # -- control ----------------------------------------------------------------------------
    def cancel(self) -> str:
        """Ask the worker to checkpoint and stop; a queued job is cancelled at once."""
        now = time.time()
        with catalog().tx() as db:
            db.execute("UPDATE jobs SET cancel_requested=1, updated=? WHERE name=?", (now, self.name))
            db.execute(
                "UPDATE jobs SET state='cancelled', ended=? WHERE name=? AND state IN ('queued','interrupted')",
                (now, self.name),
            )
        return self.state

    def resume(self, steps: int | None = None) -> Job:
        """Continue from the latest checkpoint (optionally to a new total of ``steps``)."""
        from .scheduler import schedule

        r = self.refresh()
        if r["state"] in ("running", "queued"):
            raise AiosError(f"job {self.name!r} is {r['state']}; only a stopped job can be resumed")
        if r["state"] == "succeeded" and (steps is None or steps <= r["steps"]):
            raise AiosError(
                f"job {self.name!r} already finished {r['steps']} steps; pass --steps N with N > {r['steps']}"
            )
        if steps is not None and steps < r["step"]:
            raise AiosError(f"--steps {steps} is behind the job's step {r['step']}")
        cfg = r["config"]
        if steps is not None:
            cfg["train"]["steps"] = steps
        records.update(
            self.name,
            state="queued",
            cancel_requested=0,
            error=None,
            ended=None,
            steps=steps or r["steps"],
            attempts=0,
            config=cfg,
        )
        schedule()
        return self

    # -- results ----------------------------------------------------------------------------
    def metrics(self, since_step: int | None = None) -> list[dict[str, Any]]:
        """One row per logged point: {"step", "time", "loss", ...}; eval rows carry "split"."""
        q, args = "SELECT step, time, split, data FROM metrics WHERE job=?", [self.name]
        if since_step is not None:
            q += " AND step > ?"
            args.append(since_step)
        out = []
        for step, t, split, data in catalog().query(q + " ORDER BY rowid", tuple(args)):
            row = {"step": step, "time": t, **json.loads(data)}
            if split:
                row["split"] = split
            out.append(row)
        return out

    def checkpoints(self) -> list[int]:
        """Steps with a finished checkpoint (orbax only lists committed ones)."""
        from ..train.checkpoints import Checkpoints

        if not checkpoint_dir(self.name).exists():
            return []
        with Checkpoints(checkpoint_dir(self.name), read_only=True) as ckpts:
            return ckpts.steps()

    def params(self, checkpoint: str | int = "latest") -> Any:
        """The parameters of a checkpoint ("latest", "best" or a step) as numpy arrays."""
        from ..train.checkpoints import load_params

        steps = self.checkpoints()
        if not steps:
            raise AiosError(
                f"job {self.name!r} has no checkpoint yet; wait for step {self.config['train'].get('checkpoint_every')}"
            )
        try:
            return load_params(checkpoint_dir(self.name), checkpoint)
        except (FileNotFoundError, ValueError):
            raise AiosError(
                f"job {self.name!r} has no checkpoint {checkpoint!r}; it has steps {steps} (or use latest / best)"
            ) from None

    def memory(self) -> dict[str, Any]:
        """Where the training state lives, as the worker measured it: platform, devices, bytes per device."""
        raw = self._row()["info"]
        return json.loads(raw) if raw else {}

    def best_step(self) -> int | None:
        """The checkpoint with the best eval metric (the latest when none was evaluated)."""
        from ..train.checkpoints import Checkpoints

        if not self.checkpoints():
            return None
        with Checkpoints(
            checkpoint_dir(self.name),
            read_only=True,
            best="loss" if self.config["train"].get("task") == "regression" else "accuracy",
        ) as c:
            return c.best_step()

    def evaluate(self, split: str = "test", checkpoint: str | int = "latest", batch: int = 1024) -> dict[str, Any]:
        """Score a checkpoint on a split of the job's dataset, here on the CPU: accuracy (or mse) and loss."""
        import jax
        import numpy as np

        from ..data import get
        from ..train import models
        from ..train.trainer import task_and_outputs

        cfg = self.config
        ds = get(cfg["dataset"], cfg["dataset_version"])
        if split not in ds.splits:
            raise AiosError(f"dataset {ds.name!r} has no {split!r} split; it has {', '.join(ds.splits)}")
        task, n_out = task_and_outputs(ds, cfg["train"].get("task"))
        model = models.build(cfg["train"]["model"], task, n_out, tuple(ds.feature_shape))
        params = self.params(checkpoint)
        x, y = ds.load(split)
        apply = jax.jit(model.apply)
        out = np.concatenate([np.asarray(apply(params, x[i : i + batch])) for i in range(0, len(x), batch)])
        result: dict[str, Any] = {"split": split, "rows": int(len(x)), "checkpoint": checkpoint}
        if task == "regression":
            result["mse"] = float(np.mean((out.reshape(len(out), -1) - y.reshape(len(y), -1)) ** 2))
        else:
            logp = out - jax.nn.logsumexp(out, axis=-1, keepdims=True)
            labels = y.reshape(out.shape[:-1])
            result["accuracy"] = float(np.mean(out.argmax(-1) == labels))
            result["loss"] = float(-np.mean(np.take_along_axis(np.asarray(logp), labels[..., None], -1)))
        return result

    def log_tail(self, n: int = 100) -> str:
        path = log_path(self.name)
        if not path.exists():
            return ""
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=n))

    # -- views ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The job as the CLI table, the widget and the sidebar show it (as the catalog has it now)."""
        return to_json(self._row(), summary(self.name))

    def widget(self):
        from ..widgets import JobWidget

        return JobWidget(self)

    def _ipython_display_(self):
        from IPython.display import display

        if not self.shown:
            display(self.widget())

    def __repr__(self) -> str:
        r = self._row()
        return f"<Job {self.name} {r['state']} step {r['step']}/{r['steps']}>"


def summary(name: str) -> dict[str, Any]:
    """Latest loss, accuracy and throughput of a job, from its newest metric rows."""
    out: dict[str, Any] = {"loss": None, "accuracy": None, "examples_per_s": None, "val_loss": None}
    train = catalog().one("SELECT data FROM metrics WHERE job=? AND split IS NULL ORDER BY rowid DESC LIMIT 1", (name,))
    if train:
        d = json.loads(train[0])
        out.update(loss=d.get("loss"), examples_per_s=d.get("examples_per_s"), steps_per_s=d.get("steps_per_s"))
    ev = catalog().one(
        "SELECT data FROM metrics WHERE job=? AND split IS NOT NULL ORDER BY rowid DESC LIMIT 1", (name,)
    )
    if ev:
        d = json.loads(ev[0])
        out.update(accuracy=d.get("accuracy"), val_loss=d.get("loss"))
    return out


def to_json(r: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    cfg = r["config"]
    info = json.loads(r["info"]) if r.get("info") else {}
    train = cfg.get("train", {})
    batch = train.get("batch") or 1
    rate = (s.get("examples_per_s") or 0) / batch
    eta = (r["steps"] - r["step"]) / rate if rate and r["state"] == "running" else None
    return {
        "name": r["name"],
        "state": r["state"],
        "step": r["step"],
        "steps": r["steps"],
        "priority": r["priority"],
        "devices": r["devices"],
        "n_devices": r["n_devices"],
        "device_kind": r["device_kind"],
        "pid": r["pid"],
        "created": r["created"],
        "started": r["started"],
        "ended": r["ended"],
        "updated": r["updated"],
        "error": r["error"],
        "attempts": r["attempts"],
        "dataset": cfg.get("dataset"),
        "model": cfg.get("model"),
        "config": cfg,
        "loss": s.get("loss"),
        "accuracy": s.get("accuracy"),
        "examples_per_s": s.get("examples_per_s"),
        "eta_s": eta,
        "state_bytes_per_device": info.get("state_bytes_per_device"),
    }
