"""Kubernetes exports: a model version for KServe, a training job as a JobSet (``aios export``).

>>> from aios_lab.export import export
>>> export("digits:production", to="kserve", directory="out/digits")   # build context + InferenceService
>>> export("digits-mlp", to="jobset", directory="out/train", pods=2)    # JobSet over 2 pods

Nothing here talks to a cluster: each export writes files (manifests, a Dockerfile, a README) into a new
folder, after checking its input; what the container runs is :mod:`.artifact_server` (KServe) or
:mod:`.pod_worker` (JobSet).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidInput

TARGETS = ("kserve", "jobset")


def export(what: str, *, to: str, directory: str | Path, **options: Any) -> Any:
    """Export ``what`` (``MODEL[:ALIAS]`` for kserve, a job name for jobset) into ``directory``."""
    if to == "kserve":
        from .kserve import export_model

        return export_model(what, directory, **options)
    if to == "jobset":
        from .jobset import export_job

        return export_job(what, directory, **options)
    raise InvalidInput(f"--to must be one of {', '.join(TARGETS)}, not {to!r}")


__all__ = ["export", "TARGETS"]
