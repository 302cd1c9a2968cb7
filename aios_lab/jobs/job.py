"""``Job``: a handle on one training job, read from the catalog, usable from any process.

Reading a job (``state``, ``to_json``, ``metrics``) only reads the catalog: it never schedules or
starts a process. The calls that change a job (``cancel``, ``resume``, ``delete``) run one scheduling
pass and make sure the queue keeper runs, so the queue moves on without anyone watching.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections import deque
from typing import Any

from .. import metric_names as mn
from ..catalog import catalog
from ..errors import Conflict, Forbidden, InvalidInput, NotFound
from . import keeper, limits, records
from .paths import checkpoints_of, disk_bytes, log_path, remove_job_dir


class Job:
    """A training job by name. Every attribute reads the catalog, so it is always current.

    >>> job = aios.job("digits-mlp")
    >>> job.wait(); job.state, job.step
    """

    def __init__(self, name: str):
        self.name = name
        self.shown = False  # set once a live view of this handle is on screen
        if records.row(name) is None:
            raise NotFound(f"no job named {name!r}; `%aios jobs` lists them")

    # -- state ------------------------------------------------------------------------------
    def _row(self) -> dict[str, Any]:
        r = records.row(self.name)
        if r is None:
            raise NotFound(f"job {self.name!r} was deleted")
        return r

    def refresh(self) -> dict[str, Any]:
        """The job's catalog row as it is now (a read: the queue keeper notices dead workers)."""
        return self._row()

    @property
    def state(self) -> str:
        return self._row()["state"]

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
        """Block until the job ends (or ``timeout`` seconds pass); returns its state.

        It depends on the queue moving, so it checks every few seconds that a queue keeper runs.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        checked = 0.0
        while True:
            r = self._row()
            if r["state"] in records.TERMINAL or (r["state"] == "interrupted" and not _will_resume(r)):
                return r["state"]
            if deadline is not None and time.monotonic() > deadline:
                return r["state"]
            if time.monotonic() - checked > keeper.INTERVAL_S * 5:
                keeper.ensure()
                checked = time.monotonic()
            time.sleep(poll)

    def _will_resume(self) -> bool:
        return _will_resume(self._row())

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
        _move_queue()
        return self.state

    def resume(self, steps: int | None = None) -> Job:
        """Continue from the latest checkpoint (optionally to a new total of ``steps``)."""
        r = self._row()
        if steps is not None:  # bounded like any training flag, by the one check of them
            from ..train.config import TrainConfig

            steps = TrainConfig.from_json({**r["config"]["train"], "steps": steps}).validate().steps
        if r["state"] in ("running", "queued"):
            raise Conflict(f"job {self.name!r} is {r['state']}; only a stopped job can be resumed")
        if r["state"] == "succeeded" and (steps is None or steps <= r["steps"]):
            raise InvalidInput(
                f"job {self.name!r} already finished {r['steps']} steps; pass --steps N with N > {r['steps']}"
            )
        if steps is not None and steps < r["step"]:
            raise InvalidInput(f"--steps {steps} is behind the job's step {r['step']}")
        cfg = r["config"]
        if steps is not None:
            cfg["train"]["steps"] = steps
        changed = records.update(
            self.name,
            {"state": r["state"]},
            state="queued",
            cancel_requested=0,
            error=None,
            ended=None,
            steps=steps or r["steps"],
            attempts=0,
            config=cfg,
        )
        if not changed:
            raise Conflict(f"job {self.name!r} changed while resuming it (now {self.state}); try again")
        catalog().audit("job.resume", self.name, steps=steps or r["steps"])
        _move_queue()
        return self

    def delete(self, force: bool = False) -> int:
        """Remove the job: its row, metrics, variants and folder (checkpoints, log); returns the bytes freed.

        Refused while it is queued or running, or while a registry version's lineage names it, unless
        ``force``; a running job is never deleted (cancel it first).
        """
        r = self._row()
        if r["state"] == "running" or records.alive(r["pid"]) or records.alive(r["supervisor_pid"]):
            raise Conflict(f"job {self.name!r} is running; `%aios cancel {self.name}` stops it, then delete it")
        users = lineage_users(self.name)
        if not force and (r["state"] == "queued" or users):
            why = "is queued" if r["state"] == "queued" else f"is the lineage of model {', '.join(users)}"
            raise Conflict(f"job {self.name!r} {why}; `%aios job delete {self.name} --force` deletes it anyway")
        freed = disk_bytes(self.name)
        with catalog().tx() as db:  # the state cannot change under the write lock
            n = db.execute(
                "DELETE FROM jobs WHERE name=? AND state NOT IN ('running') AND updated=?", (self.name, r["updated"])
            ).rowcount
            if not n:
                raise Conflict(f"job {self.name!r} changed while deleting it; look at `%aios jobs` and try again")
            db.execute("DELETE FROM metrics WHERE job=?", (self.name,))
            db.execute("DELETE FROM variants WHERE job=?", (self.name,))
        remove_job_dir(self.name)
        catalog().audit("job.delete", self.name, state=r["state"], force=bool(force), bytes=freed, models=users)
        if r["state"] == "queued":
            _move_queue()  # the queue's head may have been waiting behind it
        return freed

    # -- results ----------------------------------------------------------------------------
    def metrics(self, since_step: int | None = None) -> list[dict[str, Any]]:
        """One row per logged point: {"step", "time", "loss", ...}; eval rows carry "split"."""
        q, args = "SELECT step, time, split, data FROM metrics WHERE job=?", [self.name]
        if since_step is not None:
            q += " AND step > ?"
            args.append(limits.check("since_step", since_step))
        out = []
        for step, t, split, data in catalog().query(q + " ORDER BY rowid", tuple(args)):
            row = {mn.STEP: step, mn.TIME: t, **json.loads(data)}
            if split:
                row[mn.SPLIT] = split
            out.append(row)
        return out

    def checkpoint_dir(self) -> str | os.PathLike:
        """Where the job's checkpoints are: its own folder, or a cluster job's ``--checkpoint-dir``."""
        return checkpoints_of(self.name, self.config)

    def checkpoints(self) -> list[int]:
        """Steps with a finished checkpoint (orbax only lists committed ones)."""
        from ..train.checkpoints import Checkpoints

        where = self.checkpoint_dir()
        if "://" not in str(where) and not os.path.exists(where):
            return []
        with Checkpoints(where, read_only=True) as ckpts:
            return ckpts.steps()

    def checkpoint_step(self, checkpoint: str | int | None = "latest") -> int:
        """The step of ``checkpoint`` (None or "latest", "best", a step) among the job's finished checkpoints."""
        steps = sorted(self.checkpoints())
        if not steps:
            raise NotFound(
                f"job {self.name!r} has no checkpoint yet; wait until it saves one (`%aios jobs` shows its step)"
            )
        if checkpoint is None or checkpoint == "latest":
            return steps[-1]
        if checkpoint == "best":
            best = self.best_step()
            return int(best if best is not None else steps[-1])
        try:
            step = int(checkpoint)
        except (TypeError, ValueError):
            raise InvalidInput(f"--checkpoint {checkpoint!r}: use best, latest or a step number") from None
        if step not in steps:
            raise NotFound(f"job {self.name!r} has no checkpoint at step {step}; it has {', '.join(map(str, steps))}")
        return step

    def params(self, checkpoint: str | int = "latest") -> Any:
        """The parameters of a checkpoint ("latest", "best" or a step) as numpy arrays."""
        from ..train.checkpoints import load_params

        steps = self.checkpoints()
        if not steps:
            raise NotFound(
                f"job {self.name!r} has no checkpoint yet; wait for step {self.config['train'].get('checkpoint_every')}"
            )
        try:
            return load_params(self.checkpoint_dir(), checkpoint)
        except (FileNotFoundError, ValueError):
            raise NotFound(
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
            self.checkpoint_dir(),
            read_only=True,
            best=mn.LOSS if self.config["train"].get("task") == "regression" else mn.ACCURACY,
        ) as c:
            return c.best_step()

    def evaluate(self, split: str = "test", checkpoint: str | int = "latest", batch: int = 1024) -> dict[str, Any]:
        """Score a checkpoint on a split of the job's dataset, here on the CPU: the task's eval metrics."""
        import jax
        import numpy as np

        from ..data import get
        from ..train import models
        from ..train.trainer import task_and_outputs

        batch = limits.check("eval_batch", batch)
        cfg = self.config
        spec = cfg["train"].get("model")
        if isinstance(spec, dict) and spec.get("kind") == "lm":  # tokenized data, masks, adapters
            from ..train.lm_job import evaluate

            return evaluate(self, split, checkpoint, min(batch, 64))
        ds = get(cfg["dataset"], cfg["dataset_version"])
        if split not in ds.splits:
            raise NotFound(f"dataset {ds.name!r} has no {split!r} split; it has {', '.join(ds.splits)}")
        task, n_out = task_and_outputs(ds, cfg["train"].get("task"))
        model = models.build(cfg["train"]["model"], task, n_out, tuple(ds.feature_shape))
        params = self.params(checkpoint)
        x, y = ds.load(split)
        apply = jax.jit(model.apply)
        out = np.concatenate([np.asarray(apply(params, x[i : i + batch])) for i in range(0, len(x), batch)])
        result: dict[str, Any] = {mn.SPLIT: split, "rows": int(len(x)), "checkpoint": checkpoint}
        if task == "regression":
            err = float(np.mean((out.reshape(len(out), -1) - y.reshape(len(y), -1)) ** 2))
            result[mn.LOSS], result[mn.MSE] = err, err
        else:
            logp = np.asarray(out - jax.nn.logsumexp(out, axis=-1, keepdims=True))
            labels = y.reshape(out.shape[:-1])
            result[mn.LOSS] = float(-np.mean(np.take_along_axis(logp, labels[..., None], -1)))
            result[mn.ACCURACY] = float(np.mean(out.argmax(-1) == labels))
            if task == "lm":
                result[mn.PERPLEXITY] = mn.perplexity(result[mn.LOSS])
        return result

    def generate(self, prompts: Any, max_tokens: int = 128, checkpoint: str | int = "latest", **settings: Any) -> Any:
        """Complete prompts or chats from a language-model job's checkpoint ("latest", "best" or a step), as a
        registry model's ``generate`` does (``temperature``, ``top_p``, ``top_k``, ``seed``, ``stop``,
        ``on_token``, ``stream``); LoRA adapters are merged into their base first."""
        from ..train.lm_job import generate

        return generate(self, prompts, max_tokens=max_tokens, checkpoint=checkpoint, **settings)

    def log_tail(self, n: int = 100) -> str:
        """The last ``n`` lines of the job's log (its supervisor's and workers' output)."""
        n = limits.check("tail", n)
        try:  # never follow a link planted in the job's folder to a file outside AIOS_HOME
            fd = os.open(log_path(self.name), os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return ""
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise Forbidden(f"the log of job {self.name!r} is a symbolic link; aios does not follow it") from None
        with open(fd, errors="replace") as f:
            return "".join(deque(f, maxlen=n))

    # -- views ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The job as the CLI table, the widget and the sidebar show it (as the catalog has it now)."""
        return to_json(self._row(), latest_metrics(self.name), disk_bytes(self.name))

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


def _will_resume(r: dict[str, Any]) -> bool:
    return r["attempts"] < r["config"]["max_retries"] and not r["cancel_requested"]


def _move_queue() -> None:
    """After a write: one scheduling pass now, and a keeper to move the queue from here on."""
    from .scheduler import schedule

    schedule()
    keeper.ensure()


def lineage_users(name: str) -> list[str]:
    """Registry versions whose lineage names job ``name``, as ``MODEL:vN``."""
    found = catalog().query(
        "SELECT name, version FROM models WHERE json_extract(lineage, '$.job') = ? ORDER BY name, version", (name,)
    )
    return [f"{r['name']}:v{r['version']}" for r in found]


def latest_metrics(name: str) -> dict[str, dict[str, Any]]:
    """The newest train row and the newest eval row of each split: ``{"train": {...}, "val": {...}}``."""
    found = catalog().query(
        "SELECT split, step, time, data FROM metrics WHERE rowid IN "
        "(SELECT MAX(rowid) FROM metrics WHERE job=? GROUP BY split)",
        (name,),
    )
    return {(r["split"] or "train"): {mn.STEP: r["step"], mn.TIME: r["time"], **json.loads(r["data"])} for r in found}


def reported_names(task: str | None, latest: dict[str, dict[str, Any]]) -> list[str]:
    """The metric names a job reports: its task's eval metrics first, then whatever its rows hold."""
    names = list(mn.eval_metrics(task))
    for row in latest.values():
        names += [k for k in row if k not in (mn.STEP, mn.TIME, mn.SPLIT) and k not in names]
    return names


def to_json(r: dict[str, Any], latest: dict[str, dict[str, Any]], disk: int | None = None) -> dict[str, Any]:
    """The one JSON model of a job (see docs/architecture.md, "The job JSON")."""
    cfg = r["config"]
    info = json.loads(r["info"]) if r.get("info") else {}
    train = latest.get("train", {})
    gang = cfg.get("gang") if cfg.get("on") == "ray" else None
    evals = {split: row for split, row in latest.items() if split != "train"}
    last_eval = evals.get("val") or (max(evals.values(), key=lambda row: row[mn.TIME]) if evals else {})
    batch = cfg.get("train", {}).get("batch") or 1
    rate = (train.get(mn.EXAMPLES_PER_S) or 0) / batch
    eta = (r["steps"] - r["step"]) / rate if rate and r["state"] == "running" else None
    out = {
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
        "will_resume": r["state"] == "interrupted" and _will_resume(r),
        "dataset": cfg.get("dataset"),
        "model": cfg.get("model"),
        "task": cfg.get("task"),
        "config": cfg,
        "metrics": latest,
        "metric_names": reported_names(cfg.get("task"), latest),
        mn.LOSS: train.get(mn.LOSS),
        mn.ACCURACY: last_eval.get(mn.ACCURACY),
        mn.EXAMPLES_PER_S: train.get(mn.EXAMPLES_PER_S),
        "eta_s": eta,
        "state_bytes_per_device": info.get("state_bytes_per_device"),
        "disk_bytes": disk,
        "on": "ray" if gang else "local",
        "hosts": info.get("ranks", []) if gang else [],
        "gang": {**gang, "state": info.get("gang"), "checkpoint_dir": cfg.get("checkpoint_dir")} if gang else None,
    }
    out["where"] = where(out)
    return out


def where(j: dict[str, Any]) -> str:
    """Where a job runs, in a few words: local device ids, or a cluster gang and the host of each rank."""
    from ..render import fmt

    gang = j.get("gang")
    if not gang:
        return fmt(j["devices"]) if j["devices"] else f"({j['n_devices']})"
    text = f"ray {gang['hosts']}x{gang['devices_per_host']}"
    if j.get("hosts"):
        text += ": " + ", ".join(f"r{r['rank']} {r['host']} {r['node_id'][:6]}" for r in j["hosts"])
    elif gang.get("state") == "placing":
        text += " (placing)"
    return text


def delete(name: str, force: bool = False) -> int:
    """``%aios job delete NAME [--force]``: see :meth:`Job.delete`; returns the bytes freed."""
    return Job(name).delete(force=force)


__all__ = ["Job", "delete", "latest_metrics", "lineage_users", "to_json"]
