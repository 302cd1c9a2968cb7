"""``aios.sweep`` and ``aios.sweeps``: start a sweep (after checking everything it will need), or reattach.

Nothing is written until every check passed: the name (free for the sweep and for its trials' jobs), the
``--over`` space, the sampler and early-stop choices, devices per trial against the machine, the metric
against what jobs on this dataset report, and the training flags and model settings at the space's corners
(every choice, both ends of each range), with the same checks ``aios.train`` runs.
"""

from __future__ import annotations

import shutil
from typing import Any

from .. import metric_names as mn
from ..catalog import catalog
from ..errors import Conflict, InvalidInput
from ..names import check_name
from . import space as spaces, store
from .handle import Sweep

MAX_TRIALS = 1000
GOALS = ("min", "max")


def parse_metric(metric: str, task: str, splits: dict[str, int]) -> tuple[str, str]:
    """``val.loss`` -> ("val", "loss"), checked against what a job on this dataset reports."""
    split, sep, name = (metric or "").partition(".")
    if not sep:
        split, name = "val", split
    if split == "train":
        reported = (mn.LOSS,) if task == "regression" else (mn.LOSS, mn.ACCURACY)
    elif split == "val":
        if not splits.get("val"):
            raise InvalidInput(
                f"--metric {metric}: the dataset has no val split, so jobs never report it; use train.loss "
                "or declare the dataset with --split train=0.8,val=0.2"
            )
        reported = mn.eval_metrics(task)
    else:
        raise InvalidInput(f"--metric {metric}: write SPLIT.NAME with split val or train, e.g. val.loss")
    if name not in reported:
        raise InvalidInput(
            f"--metric {metric}: jobs on this {task} dataset report {', '.join(f'{split}.{m}' for m in reported)}"
        )
    return split, name


def _corner_checks(space: dict, base: dict[str, Any], model: str, model_config: dict, ds, task: str, n_out: int):
    """The training flags and model settings at every corner of the space, checked as aios.train would."""
    from ..train import models
    from ..train.config import TrainConfig

    fields = TrainConfig.defaults()
    x = ds.arrays("train")[0][:2]
    cfg = TrainConfig.for_job(**base)
    for key, dist in space.items():
        for value in spaces.corners(dist):
            if key in fields:
                if key in ("n_devices", "dataset", "model", "task", "coordinator", "num_processes", "process_id"):
                    raise InvalidInput(f"--over {key}: the sweep sets it; vary training options or model settings")
                try:
                    cfg = TrainConfig.for_job(**{**base, key: value})
                except InvalidInput as exc:
                    raise InvalidInput(f"--over {key}={value}: {exc}") from None
                if cfg.batch % base["n_devices"]:
                    raise InvalidInput(
                        f"--over {key}={value}: batch {cfg.batch} is not divisible by --devices-per-trial "
                        f"{base['n_devices']}"
                    )
            else:
                try:
                    spec = models.prepare(models.resolve(model, **{**model_config, key: value}), ds)
                    models.check(models.build(spec, task, n_out, ds.feature_shape), task, n_out, x)
                except InvalidInput as exc:
                    raise InvalidInput(
                        f"--over {key}={value}: {key} is no training option, and as a setting of model {model}: {exc}"
                    ) from None
    if cfg.batch % base["n_devices"]:
        raise InvalidInput(f"--batch {cfg.batch} is not divisible by --devices-per-trial {base['n_devices']}")


def sweep(
    name: str,
    dataset: str | None = None,
    *,
    model: str = "mlp",
    over: str | None = None,
    trials: int = 16,
    metric: str = "val.loss",
    goal: str | None = None,
    early_stop: str | None = None,
    devices_per_trial: int = 1,
    sampler: str = "tpe",
    parallel: int | None = None,
    priority: int = 0,
    seed: int = 0,
    model_config: dict[str, Any] | None = None,
    dataset_version: int | None = None,
    wait: bool = False,
    **options: Any,
) -> Sweep:
    """Start sweep ``name``: ``trials`` jobs of ``model`` on ``dataset`` over the ``over`` space, looking for the
    best ``metric`` (``goal`` min or max); or, with only a name, reattach to an existing sweep.

    ``options`` are training options shared by every trial (``steps``, ``batch``, ``lr``, ``eval_every``, ...);
    keys of ``over`` that are training options override them, the others are model settings (``width``).
    ``early_stop="asha"`` prunes hopeless trials by successive halving ("hyperband" by Hyperband); ``sampler``
    is "tpe" (default), "random" or "grid". ``parallel`` caps the trials in flight (default: as many as the
    machine's devices hold at ``devices_per_trial`` each).

    >>> sw = aios.sweep("lr-width", "digits", model="mlp", over="lr=1e-4..1e-2:log, width=64|128",
    ...                 trials=8, metric="val.loss", early_stop="asha", steps=300)
    >>> sw.wait(); sw.best()
    """
    from ..jobs import records
    from ..jobs.api import SET_BY_JOBS, kernel_on_cpu
    from ..jobs.devices import inventory
    from ..jobs.limits import Bound, check

    if dataset is None and over is None:
        return Sweep(check_name(name, "sweep"))
    kernel_on_cpu()
    from ..data import get as get_dataset
    from ..train.config import TrainConfig
    from ..train.trainer import task_and_outputs
    from . import study as studies
    from .driver import job_name, launch

    check_name(name, "sweep")
    if store.row(name) is not None:
        raise Conflict(f"a sweep named {name!r} exists already; aios.sweep({name!r}) reattaches, or pick a new name")
    if records.row(name) is not None:
        raise Conflict(f"a job is named {name!r}; a sweep needs a name of its own (its trials are {name}-t00, ...)")
    if dataset is None or over is None:
        raise InvalidInput("a new sweep needs --dataset D and --over SPACE (a name alone reattaches to a sweep)")
    trials = check("trials", trials, Bound(1, MAX_TRIALS))
    check_name(job_name(name, trials - 1, trials), "trial job (the sweep's name is too long for it)")
    space = spaces.parse(over)
    if sampler not in studies.SAMPLERS:
        raise InvalidInput(f"--sampler {sampler}: use one of {', '.join(studies.SAMPLERS)}")
    early_stop = early_stop or "none"
    if early_stop not in studies.EARLY_STOP:
        raise InvalidInput(f"--early-stop {early_stop}: use one of {', '.join(studies.EARLY_STOP)}")
    if sampler == "grid":
        spaces.grid(space)
        trials = min(trials, spaces.size(space))
    inv = inventory()
    try:
        per_trial = check("devices_per_trial", devices_per_trial, Bound(1, inv.count))
    except InvalidInput:
        raise InvalidInput(
            f"--devices-per-trial {devices_per_trial}: this machine has {inv.count} {inv.kind} device(s); "
            f"ask for 1..{inv.count}"
        ) from None
    room = inv.count // per_trial
    parallel = room if parallel is None else check("parallel", parallel, Bound(1, room))
    priority = check("priority", priority)
    seed = check("seed", seed, Bound(0, 2**32 - 1))
    taken = [r["name"] for r in records.rows() if r["name"].startswith(f"{name}-t")]
    clash = sorted(set(taken) & {job_name(name, i, trials) for i in range(trials)})
    if clash:
        raise Conflict(f"job {clash[0]!r} exists already and would be a trial of sweep {name!r}; pick another name")
    set_here = sorted(set(options) & set(SET_BY_JOBS))
    if set_here:
        raise InvalidInput(f"unknown training option {set_here[0]}; the sweep sets it for each trial")
    base = {**{k: v for k, v in options.items() if v is not None}, "n_devices": per_trial}
    cfg_train = TrainConfig.for_job(**base)
    ds = get_dataset(dataset, dataset_version)
    if "train" not in ds.splits:
        raise InvalidInput(f"dataset {dataset!r} has no train split; declare it with --split train=...")
    task, n_out = task_and_outputs(ds, cfg_train.task)
    split, metric_name = parse_metric(metric, task, ds.splits)
    goal = goal or ("max" if mn.HIGHER_IS_BETTER.get(metric_name) else "min")
    if goal not in GOALS:
        raise InvalidInput(f"--goal {goal}: use min or max")
    model_config = dict(model_config or {})
    _corner_checks(space, base, model, model_config, ds, task, n_out)
    cfg = {
        "dataset": ds.name,
        "dataset_version": ds.version,
        "model": model,
        "model_config": model_config,
        "over": over,
        "space": spaces.to_json(space),
        "trials": trials,
        "metric": f"{split}.{metric_name}",
        "split": split,
        "metric_name": metric_name,
        "goal": goal,
        "early_stop": early_stop,
        "sampler": sampler,
        "seed": seed,
        "devices_per_trial": per_trial,
        "parallel": min(parallel, trials),
        "priority": priority,
        "options": {k: v for k, v in base.items() if k != "n_devices"},
        "steps": cfg_train.steps,
        "rung_steps": cfg_train.eval_every,
        "task": task,
    }
    folder = studies.folder(name)  # no row names it: anything here was left by a start cut short
    shutil.rmtree(folder, ignore_errors=True)
    studies.create(name, cfg)
    store.insert(name, cfg)
    catalog().audit("sweep.start", name, dataset=f"{ds.name}@{ds.version}", model=model, over=over, trials=trials)
    launch(name)
    sw = Sweep(name)
    if wait:
        sw.wait()
    return sw


def sweeps() -> list[Sweep]:
    """Every sweep, oldest first."""
    return [Sweep(r["name"]) for r in store.rows()]


__all__ = ["sweep", "sweeps", "parse_metric"]
