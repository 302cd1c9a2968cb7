"""The training loop: ``train(config, on_metrics, should_stop, checkpoint_dir)``, resumable and exact.

Knows nothing of the catalog's jobs: a worker passes callbacks for metrics and cancellation. Batches
and randomness are functions of (seed, step) and the state is restored bitwise from orbax, so a run
stopped at step k and resumed ends with the same parameters as one never stopped (same devices).

The hot loop only builds a batch, dispatches the step and waits on the step ``WINDOW`` back: metrics
stay on the devices as running sums that are read every ``log_every`` steps, and the loop drains only
to read an eval (its row reaches ``on_metrics`` before the next step is dispatched, so a sweep's pruner
stops a trial at once rather than ``WINDOW`` steps later) and to check and save a checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
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

from .. import metric_names as mn
from ..errors import AiosError, InvalidInput
from . import lm_data, lm_model, models, optim, sharding as shardlib, step as steplib
from .checkpoints import Checkpoints
from .config import TrainConfig
from .saving import CHECKPOINT_SPAN, BackgroundSaver

# Dispatch at most this many steps ahead of the host: more than ~32 in flight deadlocks CPU collectives.
WINDOW = 16
EVAL_MAX_BATCHES = 32
SNAPSHOT_BYTES = 64 << 20  # train states up to this many bytes per device are checkpointed from a thread
INPUT_SPAN = "aios.input"  # what a profile's trace calls getting the next batch (CHECKPOINT_SPAN: the loop's saves)


class TrainingDiverged(AiosError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def task_and_outputs(ds: Any, task: str | None = None) -> tuple[str, int]:
    """The task (from the dataset unless given) and the model's output count for it."""
    task = task or ds.task
    if task in ("classification", "lm"):
        if not ds.n_classes:
            raise InvalidInput(f"dataset has no class count; a {task} task needs integer labels")
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
        raise InvalidInput(f"asked for {n} devices but only {len(have)} exist ({have[0].platform} x {len(have)})")
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

    ``on_metrics(row)`` gets train rows ``{"step", "time", "loss", "accuracy"?, "examples_per_s",
    "step_time", "input_wait"}`` (``aios_lab.metric_names``) and eval rows with ``"split": "val"``.
    ``should_stop()`` is polled once per step (keep it cheap): when true the run checkpoints and returns
    with ``"stopped": True``. ``dataset`` overrides the catalog lookup with any object holding the
    Dataset fields (e.g. ``arrays.ArrayDataset``). ``on_start(info)`` hears where the state lives once it
    is on the devices: ``{"devices", "platform", "start_step", "state_bytes_per_device" (params +
    optimizer state, the most any device holds), "state_bytes"}``.
    """
    config.validate()
    if config.coordinator and not jax.distributed.is_initialized():
        jax.distributed.initialize(config.coordinator, config.num_processes, config.process_id)
    emit = on_metrics or (lambda row: None)
    ds = lm_data.view(dataset if dataset is not None else _get_dataset(config))
    task, n_out = task_and_outputs(ds, config.task)
    mesh = shardlib.make_mesh(select_devices(config.n_devices, devices))
    n_dev = mesh.devices.size
    if config.batch % n_dev:
        raise InvalidInput(f"--batch {config.batch} is not divisible by the {n_dev} data-parallel devices")
    sample = np.zeros((2, *ds.feature_shape), np.dtype(ds.feature_dtype))
    prog = program(config, task, n_out, sample, mesh)  # a model that does not fit fails here, before any file
    ckpts = Checkpoints(
        checkpoint_dir or Path.cwd() / "checkpoints",
        keep=config.keep,
        best=mn.quality(task),
        reference=lm_model.reference(prog.model.spec, config.lora),
    )
    loader = run = None
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
        frozen = prog.place_frozen()
        prog = prog.bound(frozen)
        placement = _placement(state, mesh, start, frozen)
        if on_start:
            on_start(placement)
        # a small state is copied and saved from a thread; a large one in place (a copy would double it)
        background = jax.process_count() == 1 and placement["state_bytes_per_device"] <= SNAPSHOT_BYTES
        run = _Run(config, task, emit, prog, _eval_batches(ds, config.batch, data), ckpts, background)
        run.warm_up(state)
        batches = jax.profiler.annotate_function(_batch_source(loader), name=INPUT_SPAN)  # named in profiles
        return run.loop(state, start, batches, should_stop)
    finally:
        if run is not None:
            run.close(raise_error=False)  # after an error: let a save in flight finish, keep that error
        if loader is not None:
            loader.close()
        ckpts.close()


def _placement(state: dict, mesh: Any, start: int, frozen: Any = None) -> dict:
    """How many bytes of params + optimizer state each device holds (the largest share), and in all; with a
    frozen part (a LoRA base) also its bytes, apart."""
    tree = {"params": state["params"], "opt_state": state["opt_state"]}
    per_device = shardlib.bytes_per_device(tree)
    info = {
        "devices": int(mesh.devices.size),
        "platform": mesh.devices.flat[0].platform,
        "start_step": start,
        "state_bytes_per_device": max(per_device.values(), default=0),
        "state_bytes": int(sum(x.nbytes for x in jax.tree.leaves(tree))),
    }
    if frozen is not None:
        info["frozen_bytes_per_device"] = max(shardlib.bytes_per_device(frozen).values(), default=0)
        info["frozen_bytes"] = int(sum(x.nbytes for x in jax.tree.leaves(frozen)))
    return info


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
    all_finite: Callable
    copy: Callable
    frozen_shardings: Any = None
    dtype: Any = None  # the frozen part's float dtype

    def place_frozen(self) -> Any:
        """The model's frozen part (a LoRA base) loaded and laid out on its shardings, or None."""
        if self.frozen_shardings is None:
            return None
        return steplib.place(self.model.frozen(self.dtype), self.frozen_shardings)

    def bound(self, frozen: Any) -> Program:
        """This program with ``frozen`` bound as the train and eval steps' last input (itself if None)."""
        if frozen is None:
            return self
        train, evaluate = self.train_step, self.eval_step
        return dataclasses.replace(
            self,
            train_step=lambda state, sums, x, y: train(state, sums, x, y, frozen),
            eval_step=lambda params, x, y, w: evaluate(params, x, y, w, frozen),
        )


def program(config: TrainConfig, task: str, n_out: int, sample: np.ndarray, mesh) -> Program:
    """Build (or reuse from this process's cache) the Program for ``config`` on ``mesh``."""
    config.validate()
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
            config.lora,
            config.remat,
        ],
        sort_keys=True,
        default=str,
    )
    prog = _programs.get((key, mesh))
    if prog is None:
        model = models.build(spec, task, n_out, tuple(sample.shape[1:]), lora=config.lora, remat=config.remat)
        models.check(model, task, n_out, sample)
        tx = optim.make_optimizer(
            config.optimizer, config.lr, config.steps, config.warmup, config.weight_decay, config.clip
        )
        x_spec = jax.ShapeDtypeStruct((1, *sample.shape[1:]), sample.dtype)
        abstract = steplib.abstract_state(model, tx, x_spec)
        shardings = steplib.state_shardings(tx, abstract, mesh, config.shard)
        dtype = lm_model.compute_dtype(config.precision)
        frozen = None
        if model.frozen_shapes is not None:
            frozen = shardlib.param_shardings(model.frozen_shapes(dtype), mesh, config.shard)
        prog = Program(
            model,
            tx,
            mesh,
            abstract,
            shardings,
            steplib.make_init(model, tx, x_spec, shardings),
            steplib.make_train_step(model, tx, task, mesh, shardings, config.precision, frozen),
            steplib.make_eval_step(model, task, mesh, shardings["params"], config.precision, frozen),
            steplib.make_all_finite(mesh, shardings["params"]),
            steplib.make_copy(shardings),
            frozen,
            dtype,
        )
        if len(_programs) >= 4:
            _programs.pop(next(iter(_programs)))
        _programs[(key, mesh)] = prog
    return prog


_programs: dict = {}  # compiled programs of this process, so a resumed run in-process skips compiling


class _Run:
    """The loop and its bookkeeping: in-flight window, running sums, metric rows, eval, checkpoints.

    ``pending`` holds one ``(token, then)`` per dispatched program, oldest first; retiring one waits for
    its token (this bounds the in-flight window) and runs ``then`` (reading sums or eval results) if set.
    """

    def __init__(self, config: TrainConfig, task: str, emit: Callable, prog: Program, eval_batches, ckpts, background):
        self.config, self.task, self.emit, self.prog, self.ckpts = config, task, emit, prog, ckpts
        self.eval_batches = eval_batches
        self.saver = BackgroundSaver(ckpts, task) if background else None
        self.pending: deque = deque()
        self.unchecked: deque = deque()  # (step, sums) not read back yet: a save needs them finite
        self.zero = steplib.zero_sums(prog.mesh)
        self.totals = np.zeros(2)  # loss and accuracy summed over the steps since the last row
        self.count = 0
        self.wait = 0.0  # seconds spent getting batches for the steps since the last row
        self.row_t = time.time()
        self.segment_start = 0  # the first step of the running sums not read yet
        self.last_loss: float | None = None
        self.last_eval: dict | None = None
        # a time floor between saves must not differ between processes, which save together: one process only
        self.min_save_s = (config.checkpoint_min_s or 0.0) if jax.process_count() == 1 else 0.0
        self.last_save = time.monotonic()

    def warm_up(self, state: dict) -> None:
        """Compile the eval, finiteness and copy programs now, at start-up, not at the first eval or save."""
        params = state["params"]
        jax.block_until_ready(self.prog.all_finite(params))
        if self.eval_batches:
            jax.block_until_ready(self.prog.eval_step(params, *self.eval_batches[0]))
        if self.saver:
            jax.block_until_ready(self.prog.copy(state))

    def loop(self, state: dict, start: int, batch_at: Callable, should_stop: Callable | None) -> dict:
        cfg, step_fn, sums = self.config, self.prog.train_step, self.zero
        done, stopped, seg_wait = start, False, 0.0
        self.segment_start = start
        for s in range(start, cfg.steps):
            t = time.perf_counter()
            x, y = batch_at(s)
            seg_wait += time.perf_counter() - t
            state, sums = step_fn(state, sums, x, y)
            done = s + 1
            if s == start:
                self.row_t = time.time()  # the first call compiled the step: rows measure from here
            stopped = bool(should_stop()) if should_stop else False
            final = stopped or done == cfg.steps
            save = final or (done % cfg.checkpoint_every == 0 and self._save_due())
            evaluate = bool(self.eval_batches) and (final or done % cfg.eval_every == 0)
            if save or evaluate or done % cfg.log_every == 0:  # end a segment of the running sums
                self.pending.append((sums["sum"], self._segment_reader(sums, done, seg_wait)))
                self.unchecked.append((done, sums))
                sums, seg_wait = self.zero, 0.0
            else:
                self.pending.append((sums["sum"], None))
            evals = self._dispatch_eval(state["params"], done) if evaluate else None
            if save and self.saver and not final:
                finite = self.prog.all_finite(state["params"])
                self.pending.append((finite, None))
                self.saver.submit(done, self.prog.copy(state), finite, [u for _, u in self.unchecked], evals)
            elif save:
                self._save_here(done, state, evaluate)
            self._retire_beyond(WINDOW)
            if stopped:
                break
        self._drain()
        self.close()
        self.ckpts.wait()
        return _summary(done, stopped, self.last_loss, self.last_eval, self.ckpts)

    def _save_due(self) -> bool:
        """Whether the time floor between checkpoints (``checkpoint_min_s``) has passed; starts the next one."""
        now = time.monotonic()
        if now - self.last_save < self.min_save_s:
            return False
        self.last_save = now
        return True

    @functools.partial(jax.profiler.annotate_function, name=CHECKPOINT_SPAN)
    def _save_here(self, done: int, state: dict, evaluated: bool) -> None:
        """Check and save ``state`` in this thread: wait for every step, then hand it to orbax."""
        finite = self.prog.all_finite(state["params"])
        self._drain()  # every loss up to here was finite (or _drain raised)
        self.close()
        if not bool(finite):
            self._diverged(float("nan"), done)
        metrics = steplib.eval_metrics(self.last_eval, self.task) if evaluated and self.last_eval else None
        self.ckpts.save(done, state, metrics=metrics)

    def close(self, raise_error: bool = True) -> None:
        """Let the checkpoint thread finish (raising what it met); safe to call more than once."""
        saver, self.saver = self.saver, None
        if saver:
            saver.close(raise_error)

    # -- the in-flight window ------------------------------------------------------------------

    def _retire_beyond(self, n: int) -> None:
        while len(self.pending) > n:
            token, then = self.pending.popleft()
            token.block_until_ready()
            if then is not None:
                then()

    def _drain(self) -> None:
        self._retire_beyond(0)
        if self.count:
            self._row(time.time())

    # -- train metrics -------------------------------------------------------------------------

    def _segment_reader(self, sums: Any, done: int, wait: float) -> Callable[[], None]:
        """What to do once the segment of running sums ending at step ``done`` is computed."""

        def read() -> None:
            got = jax.device_get(sums)
            loss_sum, acc_sum = (float(v) for v in got["sum"])
            if not steplib.sums_clean(got):
                first_bad = int(got["first_bad"])
                self._diverged(loss_sum if not math.isfinite(loss_sum) else float("nan"), min(first_bad, done))
            while self.unchecked and self.unchecked[0][0] <= done:
                self.unchecked.popleft()
            n = done - self.segment_start
            self.segment_start = done
            self.totals += (loss_sum, acc_sum)
            self.count += n
            self.wait += wait
            self.last_loss = loss_sum / max(n, 1)
            now = time.time()
            if done == self.config.steps or now - self.row_t >= self.config.log_interval_s:
                self._row(now, done)

        return read

    def _row(self, now: float, step: int | None = None) -> None:
        """Emit one train row for the steps since the last row."""
        elapsed = max(now - self.row_t, 1e-9)
        row = {
            mn.STEP: step if step is not None else self.segment_start,
            mn.TIME: now,
            mn.LOSS: float(self.totals[0] / self.count),
            mn.EXAMPLES_PER_S: self.count * self.config.batch / elapsed,
            mn.STEP_TIME: elapsed / self.count,
            mn.INPUT_WAIT: min(1.0, self.wait / elapsed),
        }
        if self.task != "regression":
            row[mn.ACCURACY] = float(self.totals[1] / self.count)
        self.emit(row)
        self.totals[:], self.count, self.wait, self.row_t = 0, 0, 0.0, now

    def _diverged(self, loss: float, step: int) -> None:
        self.pending.clear()
        self.close(raise_error=False)
        self.ckpts.wait()
        raise TrainingDiverged(
            f"loss became {loss} at step {step}; kept the last good checkpoint "
            f"(step {self.ckpts.latest_step()}); lower --lr or add --clip and resume"
        )

    # -- evaluation ----------------------------------------------------------------------------

    def _dispatch_eval(self, params: Any, step: int) -> list:
        """Evaluate ``params`` now (before the next step donates them) and emit the row: one drain per eval."""
        outs = []
        for x, y, w in self.eval_batches:
            outs.append(self.prog.eval_step(params, x, y, w))
            self.pending.append((outs[-1], None))
            self._retire_beyond(WINDOW)  # eval steps hold collectives too: the same window bounds them
        self._retire_beyond(0)
        self._eval_row(outs, step)
        return outs

    def _eval_row(self, outs: list, step: int) -> None:
        row = {mn.STEP: step, mn.TIME: time.time(), mn.SPLIT: "val", **steplib.eval_summary(outs, self.task)}
        self.emit(row)
        self.last_eval = row


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
        raise InvalidInput("no dataset given; pass --dataset NAME")
    from ..data import get

    return get(config.dataset, config.dataset_version)


def _open_loader(ds: Any, config: TrainConfig, sharding, start_step: int) -> Any:
    """The data package's Loader for catalog datasets, or the in-memory ArrayLoader for arrays."""
    from .arrays import ArrayDataset, ArrayLoader

    if isinstance(ds, ArrayDataset):
        return ArrayLoader(ds, "train", config.batch, sharding=sharding, seed=config.seed, start_step=start_step)
    from ..data.loader import Loader

    return Loader(ds, "train", config.batch, sharding=sharding, seed=config.seed, start_step=start_step)


def _batch_source(loader: Any) -> Callable[[int], tuple]:
    """``step -> (x, y)`` on the devices. A split held in memory is sliced and transferred right here (a
    thread hand-off costs more than that); one that streams from disk comes from the loader's prefetch thread.
    """
    if getattr(loader, "cached", True):
        return loader.device_batch
    batches = iter(loader)

    def next_batch(step: int) -> tuple:
        _, x, y = next(batches)
        return x, y

    return next_batch


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


__all__ = ["TrainConfig", "TrainingDiverged", "Program", "program", "train", "task_and_outputs", "select_devices"]
