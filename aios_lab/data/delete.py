"""Deleting dataset versions: refused while a job or a registry model version refers to them.

>>> aios.delete_dataset("digits", 1)          # %aios dataset delete digits@1
>>> aios.delete_dataset("digits", force=True)  # every version, even if a model's lineage names one
"""

from __future__ import annotations

import json

from .. import atomic, config
from ..catalog import catalog, retire
from ..errors import Conflict, InvalidInput, NotFound
from ..names import check_name
from .dataset import Dataset, _from_row, get

PENDING = ("queued", "interrupted")  # jobs that will read their dataset again (interrupted ones are requeued)


def parse_ref(ref: str, version: int | str | None = None) -> tuple[str, int | None]:
    """``NAME``, ``NAME@V``, ``NAME@vV`` or ``NAME:vV`` -> (name, version or None for every version)."""
    name, at, v = ref.replace(":", "@", 1).partition("@") if isinstance(ref, str) else (ref, "", "")
    if at:
        if version is not None:
            raise InvalidInput(f"{ref!r} names a version already; drop the separate version {version!r}")
        version = v
    check_name(name, "dataset")
    if version is None:
        return name, None
    text = str(version).lower().lstrip("v")
    if not text.isdigit():
        raise InvalidInput(f"bad version {version!r} for dataset {name!r}; give a number like 2 (NAME@2)")
    return name, int(text)


def references(name: str, version: int) -> dict[str, list[str]]:
    """What refers to ``name`` version ``version``: running jobs, pending jobs, registry model versions."""
    refs: dict[str, list[str]] = {"running": [], "pending": [], "models": []}
    for r in catalog().query(
        "SELECT name, state, config FROM jobs WHERE state IN ('running', 'queued', 'interrupted')"
    ):
        cfg = json.loads(r["config"])
        if cfg.get("dataset") == name and cfg.get("dataset_version") == version:
            refs["running" if r["state"] == "running" else "pending"].append(r["name"])
    for r in catalog().query("SELECT name, version, lineage FROM models ORDER BY name, version"):
        lin = json.loads(r["lineage"])
        if lin.get("dataset") == name and lin.get("dataset_version") == version:
            refs["models"].append(f"{r['name']}:v{r['version']}")
    return refs


def delete(name: str, version: int | str | None = None, force: bool = False) -> list[Dataset]:
    """Delete one version of dataset ``name`` (or every version when ``version`` is None); returns what went.

    Refused while a queued or interrupted job, or a registry model version's lineage, refers to a version,
    unless ``force``; never while a job is running on it. Rows go first, then the files; each deletion is
    written to the audit log and its number is never given out again.
    """
    name, version = parse_ref(name, version)
    doomed = [get(name, version)] if version is not None else _all(name)
    cat = catalog()
    with cat.tx() as db:  # the write lock: no job or model can start referring to them meanwhile
        for ds in doomed:
            _check_free(ds, force)
        for ds in doomed:
            db.execute("DELETE FROM datasets WHERE name=? AND version=?", (ds.name, ds.version))
            retire(db, "datasets", ds.name, ds.version, ds.hash)
    for ds in doomed:
        atomic.discard(config.named("datasets", ds.name, f"v{ds.version}"))
        cat.audit("dataset.delete", ds.ref, hash=ds.hash, nbytes=ds.nbytes, force=bool(force))
    folder = config.named("datasets", name)
    try:
        folder.rmdir()  # only if no version is left in it
    except OSError:
        pass
    return doomed


def _all(name: str) -> list[Dataset]:
    rows = catalog().query("SELECT * FROM datasets WHERE name=? ORDER BY version", (name,))
    if not rows:
        raise NotFound(f"no dataset {name!r}; `%aios datasets` lists them")
    return [_from_row(r) for r in rows]


def _check_free(ds: Dataset, force: bool) -> None:
    refs = references(ds.name, ds.version)
    if refs["running"]:
        raise Conflict(
            f"job {refs['running'][0]!r} is running on {ds.ref}; cancel it or let it finish, then delete "
            "(--force never deletes data under a running job)"
        )
    if force:
        return
    if refs["pending"]:
        raise Conflict(
            f"job {refs['pending'][0]!r} will train on {ds.ref}; cancel it first, or delete with --force "
            "(the job then fails when it starts)"
        )
    if refs["models"]:
        listed = ", ".join(refs["models"][:3]) + (" and more" if len(refs["models"]) > 3 else "")
        raise Conflict(
            f"{ds.ref} is the lineage of model {listed}; delete with --force to keep the models without their data"
        )
