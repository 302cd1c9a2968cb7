"""The training loop: ``train(config, on_metrics, should_stop, checkpoint_dir)``, resumable and exact.

Knows nothing of the catalog's jobs: a worker passes callbacks for metrics and cancellation. Batches
and randomness are functions of (seed, step) and the state is restored bitwise from orbax, so a run
stopped at step k and resumed ends with the same parameters as one never stopped (same devices).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ..errors import AiosError
from . import models, optim, sharding as shardlib, step as steplib
from .checkpoints import Checkpoints

# Dispatch at most this many steps ahead of the host: more than ~32 in flight deadlocks CPU collectives.
WINDOW = 16
EVAL_MAX_BATCHES = 32


class TrainingDiverged(AiosError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Everything a training run needs, JSON round-trippable so a worker process can rebuild it."""

    dataset: str = ""
    dataset_version: int | None = None
    model: Any = "mlp"  # a model name/target or a resolved spec dict (see models.resolve)
    n_devices: int = 1
    steps: int = 1000
    batch: int = 128
    lr: float = 1e-3
    optimizer: str = "adamw"
    shard: str = "dp"
    precision: str = "fp32"
    checkpoint_every: int = 500
    eval_every: int = 500
    seed: int = 0
    task: str | None = None
    warmup: int = 0
    weight_decay: float = 0.0
    clip: float = 1.0
    log_every: int = 10
    log_interval_s: float = 0.5  # at most about one train metrics row per this many seconds
    keep: int = 3
    coordinator: str | None = None  # jax.distributed: "host:port", process count and this process's id
    num_processes: int = 1
    process_id: int = 0

    def to_json(self) -> str:
        """The config as a JSON object string."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> TrainConfig:
        """A config from ``to_json``'s output (unknown keys are refused, missing ones take defaults)."""
        data = json.loads(text) if isinstance(text, str) else dict(text)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise AiosError(f"unknown train config keys: {', '.join(sorted(unknown))}")
        return cls(**data)

    def validate(self) -> TrainConfig:
        """Refuse impossible settings with a one-line error before anything runs."""
        checks = [
            (self.steps >= 1, "--steps must be at least 1"),
            (self.batch >= 1, "--batch must be at least 1"),
            (self.n_devices >= 1, "--devices must be at least 1"),
            (
                self.batch % max(self.n_devices, 1) == 0,
                f"--batch {self.batch} is not divisible by the {self.n_devices} data-parallel devices; "
                f"use a multiple of {self.n_devices}",
            ),
            (self.lr > 0 and math.isfinite(self.lr), "--lr must be a positive number"),
            (self.optimizer in optim.OPTIMIZERS, f"--optimizer must be one of {', '.join(optim.OPTIMIZERS)}"),
            (self.shard in shardlib.MODES, f"--shard must be one of {', '.join(shardlib.MODES)}"),
            (self.precision in ("fp32", "bf16"), "--precision must be fp32 or bf16"),
            (
                self.checkpoint_every >= 1 and self.eval_every >= 1 and self.log_every >= 1,
                "--checkpoint-every, --eval-every and log_every must be at least 1",
            ),
            (self.task in (None, *models.TASKS), f"--task must be one of {', '.join(models.TASKS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise AiosError(message)
        return self


def task_and_outputs(ds: Any, task: str | None = None) -> tuple[str, int]:
    """The task (from the dataset unless given) and the model's output count for it."""
    task = task or ds.task
    if task in ("classification", "lm"):
        if not ds.n_classes:
            raise AiosError(f"dataset has no class count; a {task} task needs integer labels")
        return task, int(ds.n_classes)
    shape = tuple(getattr(ds, "target_shape", ()) or ())
    return task, int(np.prod(shape)) if shape else 1


def select_devices(n: int, devices: Sequence[jax.Device] | None = None) -> list[jax.Device]:
    """``devices`` if given, else the first ``n`` of this job's visible devices (all of them across processes)."""
    if devices is not None:
        return list(devices)
    have = jax.devices()
    if jax.process_count() > 1:
        return have
    if n > len(have):
        raise AiosError(f"asked for {n} devices but only {len(have)} exist ({have[0].platform} x {len(have)})")
    return have[:n]


def train(
    config: TrainConfig,
    on_metrics: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | Path | None = None,
    devices: Sequence[jax.Device] | None = None,
    dataset: Any = None,
    on_start: Callable[[dict], None] | None = None,
) -> dict:
    """Train (resuming from the latest checkpoint in ``checkpoint_dir`` if any); returns a summary dict.

    ``on_metrics(row)`` gets train rows ``{"step","time","loss","accuracy"?,"examples_per_s","step_time"}``
    and eval rows with ``"split": "val"``. ``should_stop()`` is polled once per step (keep it cheap): when
    true the run checkpoints and returns with ``"stopped": True``. ``dataset`` overrides the catalog
    lookup with any object holding the Dataset fields (e.g. ``arrays.ArrayDataset``). ``on_start(info)``
    hears where the state lives once it is on the devices: ``{"devices", "platform", "start_step",
    "state_bytes_per_device" (params + optimizer state, the most any device holds), "state_bytes"}``.
    """
    config.validate()
    if config.coordinator and not jax.distributed.is_initialized():
        jax.distributed.initialize(config.coordinator, config.num_processes, config.process_id)
    emit = on_metrics or (lambda row: None)
    ds = dataset if dataset is not None else _get_dataset(config)
    task, n_out = task_and_outputs(ds, config.task)
    mesh = shardlib.make_mesh(select_devices(config.n_devices, devices))
    n_dev = mesh.devices.size
    if config.batch % n_dev:
        raise AiosError(f"--batch {config.batch} is not divisible by the {n_dev} data-parallel devices")
    sample = np.zeros((2, *ds.feature_shape), np.dtype(ds.feature_dtype))
    prog = program(config, task, n_out, sample, mesh)  # a model that does not fit fails here, before any file
    ckpts = Checkpoints(
        checkpoint_dir or Path.cwd() / "checkpoints",
        keep=config.keep,
        best="loss" if task == "regression" else "accuracy",
    )
    loader = None
    try:
        start = ckpts.latest_step() or 0
        if start >= config.steps:
            return _summary(start, False, None, None, ckpts)
        data = shardlib.batch_sharding(mesh)
        loader = _open_loader(ds, config, data, start_step=start)
        if start:
            target = jax.tree.map(
                lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), prog.abstract, prog.shardings
            )
            state = ckpts.restore(start, target)
        else:
            state = prog.init(jax.random.key(config.seed))
        if on_start:
            on_start(_placement(state, mesh, start))
        run = _Run(config, task, emit, prog, _eval_batches(ds, config.batch, data), ckpts)
        return run.loop(state, start, loader, should_stop)
    finally:
        if loader is not None:
            loader.close()
        ckpts.close()


def _placement(state: dict, mesh: Any, start: int) -> dict:
    """How many bytes of params + optimizer state each device holds (the largest share), and in all."""
    tree = {"params": state["params"], "opt_state": state["opt_state"]}
    per_device = shardlib.bytes_per_device(tree)
    return {
        "devices": int(mesh.devices.size),
        "platform": mesh.devices.flat[0].platform,
        "start_step": start,
        "state_bytes_per_device": max(per_device.values(), default=0),
        "state_bytes": int(sum(x.nbytes for x in jax.tree.leaves(tree))),
    }


@dataclass(frozen=True)
class Program:
    """What a config compiles to on a mesh: model, optimiser, state layout and the jitted functions."""

    model: models.Model
    tx: Any
    mesh: Any
    abstract: Any
    shardings: Any
    init: Callable
    train_step: Callable
    eval_step: Callable


def program(config: TrainConfig, task: str, n_out: int, sample: np.ndarray, mesh) -> Program:
    """Build (or reuse from this process's cache) the Program for ``config`` on ``mesh``."""
    spec = models.resolve(config.model)  # once: a cell name is a catalog lookup
    key = json.dumps(
        [
            spec,
            task,
            n_out,
            list(sample.shape[1:]),
            str(sample.dtype),
            config.optimizer,
            config.lr,
            config.steps,
            config.warmup,
            config.weight_decay,
            config.clip,
            config.shard,
            config.precision,
        ],
        sort_keys=True,
        default=str,
    )
    prog = _programs.get((key, mesh))
    if prog is None:
        model = models.build(spec, task, n_out, tuple(sample.shape[1:]))
        models.check(model, task, n_out, sample)
        tx = optim.make_optimizer(
            config.optimizer, config.lr, config.steps, config.warmup, config.weight_decay, config.clip
        )
        x_spec = jax.ShapeDtypeStruct((1, *sample.shape[1:]), sample.dtype)
        abstract = steplib.abstract_state(model, tx, x_spec)
        shardings = steplib.state_shardings(tx, abstract, mesh, config.shard)
        prog = Program(
            model,
            tx,
            mesh,
            abstract,
            shardings,
            steplib.make_init(model, tx, x_spec, shardings),
            steplib.make_train_step(model, tx, task, mesh, shardings, config.precision),
            steplib.make_eval_step(model, task, mesh, shardings["params"], config.precision),
        )
        if len(_programs) >= 4:
            _programs.pop(next(iter(_programs)))
        _programs[(key, mesh)] = prog
    return prog


_all_finite = jax.jit(steplib.all_finite)
_programs: dict = {}  # compiled programs of this process, so a resumed run in-process skips compiling


class _Run:
    """The loop's bookkeeping: in-flight window, metric rows, eval, checkpoint-on-good-state."""

    def __init__(self, config, task, emit, prog, eval_batches, ckpts):
        self.config, self.task, self.emit, self.ckpts = config, task, emit, ckpts
        self.pending: deque = deque()
        self.acc = np.zeros(2)
        self.count = 0
        self.last_row_t: float | None = None
        self.last_loss: float | None = None
        self.last_eval: dict | None = None
        self.train_step, self.eval_step, self.eval_batches = prog.train_step, prog.eval_step, eval_batches

    def loop(self, state, start, loader, should_stop) -> dict:
        cfg, done, stopped, it = self.config, start, False, iter(loader)
        self.last_row_t = time.time()
        for s in range(start, cfg.steps):
            _, x, y = next(it)
            state, m = self.train_step(state, x, y)
            done = s + 1
            self.pending.append((done, m))
            while len(self.pending) > WINDOW:
                self._retire(*self.pending.popleft())
            stopped = bool(should_stop()) if should_stop else False
            final = stopped or done == cfg.steps
            evaluated = None
            if self.eval_batches and (done % cfg.eval_every == 0 or final):
                self._drain()
                evaluated = self._evaluate(state["params"], done)
            if done % cfg.checkpoint_every == 0 or final:
                self._drain()  # every loss up to here was finite
                if not bool(_all_finite(state["params"])):
                    self._diverged(float("nan"), done)
                self.ckpts.save(done, state, metrics=evaluated)
            if stopped:
                break
        self._drain()
        self.ckpts.wait()
        return _summary(done, stopped, self.last_loss, self.last_eval, self.ckpts)

    def _retire(self, step: int, m: jax.Array) -> None:
        """Read a finished step's metrics (this bounds the in-flight window), check them, maybe emit a row."""
        loss, acc = (float(v) for v in np.asarray(m))
        if not math.isfinite(loss):
            self._diverged(loss, step)
        self.acc += (loss, acc)
        self.count += 1
        self.last_loss = loss
        now = time.time()
        final = step == self.config.steps or not self.pending
        if (step % self.config.log_every == 0 and now - self.last_row_t >= self.config.log_interval_s) or final:
            elapsed = max(now - self.last_row_t, 1e-9)
            row = {
                "step": step,
                "time": now,
                "loss": float(self.acc[0] / self.count),
                "examples_per_s": self.count * self.config.batch / elapsed,
                "step_time": elapsed / self.count,
            }
            if self.task != "regression":
                row["accuracy"] = float(self.acc[1] / self.count)
            self.emit(row)
            self.acc[:], self.count, self.last_row_t = 0, 0, now

    def _diverged(self, loss: float, step: int) -> None:
        self.ckpts.wait()
        raise TrainingDiverged(
            f"loss became {loss} at step {step}; kept the last good checkpoint "
            f"(step {self.ckpts.latest_step()}); lower --lr or add --clip and resume"
        )

    def _drain(self) -> None:
        while self.pending:
            self._retire(*self.pending.popleft())

    def _evaluate(self, params, step: int) -> dict:
        sums = []
        for i, (x, y, w) in enumerate(self.eval_batches):
            sums.append(self.eval_step(params, x, y, w))
            if i >= WINDOW:  # the same bounded in-flight window as training
                sums[i - WINDOW] = np.asarray(sums[i - WINDOW])
        totals = np.sum([np.asarray(v) for v in sums], axis=0, dtype=np.float64)
        loss_sum, correct, count = (float(v) for v in totals)
        row = {"step": step, "time": time.time(), "split": "val", "loss": loss_sum / max(count, 1)}
        if self.task != "regression":
            row["accuracy"] = correct / max(count, 1)
        self.emit(row)
        self.last_eval = row
        return {k: v for k, v in row.items() if k in ("loss", "accuracy")}


def _summary(step, stopped, loss, val, ckpts) -> dict:
    return {
        "step": step,
        "stopped": stopped,
        "loss": loss,
        "val": val,
        "latest_checkpoint": ckpts.latest_step(),
        "best_checkpoint": ckpts.best_step(),
    }


def _get_dataset(config: TrainConfig) -> Any:
    """The catalog dataset named by the config (imported lazily: the step and mesh need no zarr)."""
    if not config.dataset:
        raise AiosError("no dataset given; pass --dataset NAME")
    from ..data import get

    return get(config.dataset, config.dataset_version)


def _open_loader(ds: Any, config: TrainConfig, sharding, start_step: int) -> Any:
    """The data package's Loader for catalog datasets, or the in-memory ArrayLoader for arrays."""
    from .arrays import ArrayDataset, ArrayLoader

    if isinstance(ds, ArrayDataset):
        return ArrayLoader(ds, "train", config.batch, sharding=sharding, seed=config.seed, start_step=start_step)
    from ..data.loader import Loader

    return Loader(ds, "train", config.batch, sharding=sharding, seed=config.seed, start_step=start_step)


def _eval_batches(ds: Any, batch: int, sharding) -> list[tuple]:
    """The val split (at most EVAL_MAX_BATCHES batches) padded to whole batches with weight 0, on device."""
    if not getattr(ds, "splits", {}).get("val"):
        return []
    x, y = ds.load("val")
    n = min(len(x), EVAL_MAX_BATCHES * batch)
    x, y = np.asarray(x[:n]), np.asarray(y[:n])
    pad = -n % batch
    w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    y = np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)])
    p, k = jax.process_index(), jax.process_count()

    def put(a):
        if k == 1:
            return jax.device_put(a, sharding)
        rows = slice(p * len(a) // k, (p + 1) * len(a) // k)  # this process's share of the global batch
        return jax.make_array_from_process_local_data(sharding, a[rows], a.shape)

    return [(put(x[i : i + batch]), put(y[i : i + batch]), put(w[i : i + batch])) for i in range(0, len(x), batch)]
