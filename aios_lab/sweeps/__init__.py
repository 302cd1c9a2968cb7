"""Sweeps: many trials of one model over a search space, each an ordinary aios job, sampled and pruned by Optuna.

``aios.sweep(name, dataset, over=..., trials=..., metric=..., early_stop="asha")`` starts one (or, given only a
name, reattaches); ``aios.sweeps()`` lists them. The parts: ``space`` (parsing ``--over``), ``study`` (Optuna's
journal, sampler and pruner), ``store`` (catalog rows), ``driver`` (the detached process), ``trial_hook``
(pruning from a trial's worker), ``handle`` (``Sweep``), ``widget`` (the live view).
"""

from .api import sweep, sweeps
from .handle import Sweep, Trial

__all__ = ["Sweep", "Trial", "sweep", "sweeps"]
