"""Optuna glue: the study of a sweep in a journal file under ``AIOS_HOME/sweeps/NAME/``, its sampler and pruner.

The journal (``optuna.storages.JournalStorage`` over a file, safe for several processes) is the sweep's own
state: the driver asks for trials and tells their results, and each trial's worker reports its evaluations
and asks whether to stop. Sampler and pruner are not stored by Optuna, so both sides rebuild them from the
sweep's config with :func:`sampler` and :func:`pruner`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from .. import config
from . import space as spaces

SAMPLERS = ("tpe", "random", "grid")
EARLY_STOP = ("asha", "hyperband", "none")
REDUCTION = 3  # successive halving keeps the best third of the trials at each rung

optuna.logging.set_verbosity(optuna.logging.WARNING)


def folder(name: str) -> Path:
    """``AIOS_HOME/sweeps/NAME/`` (made 0700)."""
    path = config.named("sweeps", name)
    config.private_dir(path)
    return path


def storage(name: str) -> optuna.storages.JournalStorage:
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(folder(name) / "optuna.journal")))


def sampler(cfg: dict[str, Any]) -> optuna.samplers.BaseSampler:
    kind, seed = cfg["sampler"], cfg.get("seed", 0)
    if kind == "grid":
        return optuna.samplers.GridSampler(spaces.grid(spaces.from_json(cfg["space"])), seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, cfg["trials"] // 2)))


def pruner(cfg: dict[str, Any]) -> optuna.pruners.BasePruner:
    """Successive halving (ASHA) or Hyperband over steps, with the first rung at the first evaluation."""
    kind, first, steps = cfg.get("early_stop") or "none", cfg["rung_steps"], cfg["steps"]
    if kind == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=REDUCTION)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=steps, reduction_factor=REDUCTION)
    return optuna.pruners.NopPruner()


def create(name: str, cfg: dict[str, Any]) -> optuna.Study:
    direction = "minimize" if cfg["goal"] == "min" else "maximize"
    return optuna.create_study(
        study_name=name, storage=storage(name), sampler=sampler(cfg), pruner=pruner(cfg), direction=direction
    )


def load(name: str, cfg: dict[str, Any]) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage(name), sampler=sampler(cfg), pruner=pruner(cfg))


def trial(name: str, cfg: dict[str, Any], number: int) -> optuna.Trial:
    """Trial ``number`` of sweep ``name``, to report evaluations and ask whether to stop from its worker."""
    st = storage(name)
    study = optuna.load_study(study_name=name, storage=st, sampler=sampler(cfg), pruner=pruner(cfg))
    return optuna.Trial(study, st.get_trial_id_from_study_id_trial_number(st.get_study_id_from_name(name), number))


__all__ = ["SAMPLERS", "EARLY_STOP", "folder", "storage", "sampler", "pruner", "create", "load", "trial"]
