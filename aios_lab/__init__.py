"""aios_lab: a notebook as the control room of an AI operating system.

>>> import aios_lab as aios
>>> ds = aios.dataset("digits", "sklearn:digits")
>>> job = aios.train("digits-mlp", dataset="digits", model="mlp", devices="all", steps=300)

The public names load lazily so that ``import aios_lab`` (and ``%load_ext aios_lab``) stays fast.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from .errors import AiosError

__version__ = "0.1.0"

# public name -> "module:attribute" (or "module" for a submodule)
_API = {
    "dataset": "aios_lab.data:dataset",
    "datasets": "aios_lab.data:datasets",
    "delete_dataset": "aios_lab.data:delete",
    "define_model": "aios_lab.train.models:define",
    "train": "aios_lab.jobs:train",
    "job": "aios_lab.jobs:job",
    "jobs": "aios_lab.jobs:jobs",
    "devices": "aios_lab.jobs:devices",
    "delete_job": "aios_lab.jobs:delete_job",
    "compress": "aios_lab.compress:compress",
    "publish": "aios_lab.registry:publish",
    "registry": "aios_lab.registry",
    "import_model": "aios_lab.registry:import_model",
    "promote": "aios_lab.registry:promote",
    "rollback": "aios_lab.registry:rollback",
    "lineage": "aios_lab.registry:lineage",
    "serve": "aios_lab.serve:serve",
    "endpoints": "aios_lab.serve:endpoints",
    "canary": "aios_lab.serve.canary:canary",
    "demo": "aios_lab.demo:run_demo",
    "cluster": "aios_lab.cluster",
    "export": "aios_lab.export:export",
    "sweep": "aios_lab.sweeps:sweep",
    "sweeps": "aios_lab.sweeps:sweeps",
    "compare": "aios_lab.compare:compare",
    "profile": "aios_lab.profiling:profile",
}

__all__ = ["AiosError", "load_ipython_extension", "__version__", *_API]


def load_ipython_extension(ipython) -> None:
    """``%load_ext aios_lab``: registers ``%aios`` / ``%%aios`` (IPython is imported only here)."""
    from .magics import load_ipython_extension as load

    load(ipython)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt JupyterLab extension lives (for `jupyter labextension develop`)."""
    return [{"src": "labextension", "dest": "aios-lab"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "aios_lab.jupyter_ext"}]


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'aios_lab' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = importlib.import_module(module)
    value = getattr(value, attr) if attr else value
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """Keeps ``aios.train`` (and compress, jobs, serve) the API functions after their subpackages load.

    Importing ``aios_lab.train`` would otherwise set the package attribute ``train`` to the
    subpackage; the subpackages stay reachable through ``sys.modules`` and relative imports.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if ":" in _API.get(name, "") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
