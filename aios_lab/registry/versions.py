"""Registry rows in the catalog: model versions, aliases, listing, deletion and version resolution."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import config
from ..catalog import catalog
from ..errors import AiosError
from ..names import check_name
from ..render import Table, age, fmt, nbytes as fmt_bytes

RESERVED_ALIASES = ("latest",)


@dataclass
class ModelVersion:
    """One immutable version of a registered model (a row of the catalog's ``models`` table)."""

    name: str
    version: int
    path: str
    manifest_sha256: str
    nbytes: int
    signature: dict[str, Any]
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    created_by: str
    created: float
    aliases: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> Table:
        rows = [
            ["version", self.version],
            ["aliases", ", ".join(self.aliases) or "-"],
            ["path", self.path],
            ["size", fmt_bytes(self.nbytes)],
            ["manifest sha256", self.manifest_sha256],
            ["created", f"{age(self.created)} ago by {self.created_by}"],
        ]
        for io in ("inputs", "outputs"):
            for t in self.signature.get(io, []):
                rows.append([io[:-1], f"{t['name']} {t['datatype']} {t['shape']}"])
        rows += [[f"metric {k}", v] for k, v in self.metrics.items()]
        rows += [[f"lineage {k}", v] for k, v in self.lineage.items()]
        return Table(["", ""], rows, title=self.ref)

    def __str__(self) -> str:
        return str(self.table())

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()

    def __repr__(self) -> str:
        return f"<ModelVersion {self.ref} {fmt_bytes(self.nbytes)} {self.manifest_sha256[:12]}>"


def _from_row(r: Any, aliases: dict[tuple[str, int], list[str]] | None = None) -> ModelVersion:
    if aliases is None:
        aliases = _aliases(r["name"])
    return ModelVersion(
        name=r["name"],
        version=int(r["version"]),
        path=r["path"],
        manifest_sha256=r["manifest_sha256"],
        nbytes=int(r["nbytes"]),
        signature=json.loads(r["signature"]),
        metrics=json.loads(r["metrics"]),
        lineage=json.loads(r["lineage"]),
        created_by=r["created_by"],
        created=float(r["created"]),
        aliases=sorted(aliases.get((r["name"], int(r["version"])), [])),
    )


def _aliases(model: str | None = None) -> dict[tuple[str, int], list[str]]:
    q, args = "SELECT model, alias, version FROM aliases", ()
    if model is not None:
        q, args = q + " WHERE model=?", (model,)
    out: dict[tuple[str, int], list[str]] = {}
    for r in catalog().query(q, args):
        out.setdefault((r["model"], int(r["version"])), []).append(r["alias"])
    return out


def models_dir(model: str) -> Path:
    return config.named("models", model)


def check_alias(alias: str) -> str:
    check_name(alias, "alias")
    if alias in RESERVED_ALIASES or re.fullmatch(r"v?\d+", alias):
        raise AiosError(f"alias {alias!r} is reserved (a version number or 'latest'); pick a word such as production")
    return alias


def model_names() -> list[str]:
    """Every registered model's name, sorted (no version rows are parsed)."""
    return [r[0] for r in catalog().query("SELECT DISTINCT name FROM models ORDER BY name")]


def versions(model: str) -> list[int]:
    return [int(r[0]) for r in catalog().query("SELECT version FROM models WHERE name=? ORDER BY version", (model,))]


def resolve(model: str, version: int | str | None = None) -> int:
    """A version number from None (newest), an int, ``"3"``/``"v3"``, ``"latest"`` or an alias."""
    check_name(model, "model")
    have = versions(model)
    if not have:
        raise AiosError(f"no model named {model!r} in the registry; `%aios models` lists them")
    if version is None or version == "latest":
        return have[-1]
    if isinstance(version, str) and re.fullmatch(r"v?\d+", version):
        version = int(version.lstrip("v"))
    if isinstance(version, int) and not isinstance(version, bool):
        if version not in have:
            raise AiosError(f"model {model!r} has no version {version}; it has {', '.join(map(str, have))}")
        return version
    if not isinstance(version, str):
        raise AiosError(f"version {version!r}: give a number, an alias or nothing for the newest")
    r = catalog().one("SELECT version FROM aliases WHERE model=? AND alias=?", (model, version))
    if r is None:
        names = sorted({a for v in _aliases(model).values() for a in v})
        raise AiosError(f"model {model!r} has no alias {version!r}" + (f"; it has {', '.join(names)}" if names else ""))
    return int(r[0])


def get(model: str, version: int | str | None = None) -> ModelVersion:
    """The catalog record of a model version (no files are read)."""
    v = resolve(model, version)
    return _from_row(catalog().one("SELECT * FROM models WHERE name=? AND version=?", (model, v)))


def list_models(model: str | None = None) -> list[ModelVersion]:
    """Every registered version (of ``model``, or all), by name then version, with its aliases."""
    q, args = "SELECT * FROM models", ()
    if model is not None:
        check_name(model, "model")
        q, args = q + " WHERE name=?", (model,)
    aliases = _aliases(model)
    return [_from_row(r, aliases) for r in catalog().query(q + " ORDER BY name, version", args)]


def set_alias(model: str, alias: str, version: int | str | None) -> ModelVersion | None:
    """Point ``alias`` (e.g. production) at ``version`` of ``model``; ``version=None`` removes the alias."""
    check_alias(alias)
    cat = catalog()
    old = cat.one("SELECT version FROM aliases WHERE model=? AND alias=?", (model, alias))
    old_v = int(old[0]) if old else None
    if version is None:
        check_name(model, "model")
        if old is None:
            raise AiosError(f"model {model!r} has no alias {alias!r}")
        with cat.tx() as db:
            db.execute("DELETE FROM aliases WHERE model=? AND alias=?", (model, alias))
        cat.audit("alias.remove", f"{model}@{alias}", previous=old_v)
        return None
    if isinstance(version, str) and not re.fullmatch(r"v?\d+", version):
        raise AiosError(f"set_alias takes a version number, not {version!r}")
    v = resolve(model, int(str(version).lstrip("v")))
    with cat.tx() as db:
        db.execute(
            "INSERT OR REPLACE INTO aliases (model, alias, version, updated) VALUES (?,?,?,?)",
            (model, alias, v, time.time()),
        )
    mv = get(model, v)
    cat.audit("alias", f"{model}@{alias}", version=v, previous=old_v, manifest_sha256=mv.manifest_sha256)
    return mv


def delete(model: str, version: int | str, force: bool = False) -> None:
    """Remove one version (its row, then its files). Refused while an alias points at it, unless ``force``."""
    mv = get(model, version)
    v = mv.version
    if mv.aliases and not force:
        raise AiosError(
            f"{mv.ref} is aliased as {', '.join(mv.aliases)}; move the alias first "
            f"(set_alias) or delete with force=True"
        )
    cat = catalog()
    with cat.tx() as db:
        db.execute("DELETE FROM aliases WHERE model=? AND version=?", (model, v))
        db.execute("DELETE FROM models WHERE name=? AND version=?", (model, v))
    path = Path(mv.path)
    if path.exists():
        trash = path.parent / f".deleted-v{v}-{uuid.uuid4().hex[:8]}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
    cat.audit("delete", mv.ref, manifest_sha256=mv.manifest_sha256, aliases=mv.aliases)


def models_table(model: str | None = None) -> Table:
    """``%aios models``: one row per version with aliases, size, metrics and lineage."""
    rows = []
    for mv in list_models(model):
        metric = next(
            (
                (k, mv.metrics[k])
                for k in ("accuracy", "token_accuracy", "mse", "loss")
                if isinstance(mv.metrics.get(k), (int, float))
            ),
            None,
        )
        lin = mv.lineage
        src = f"{lin.get('job') or '-'}@{lin.get('checkpoint_step', '-')}"
        data = f"{lin['dataset']}@{lin.get('dataset_version')}" if lin.get("dataset") else "-"
        rows.append(
            [
                mv.name,
                mv.version,
                ", ".join(mv.aliases) or "-",
                fmt_bytes(mv.nbytes),
                lin.get("method") or "fp32",
                f"{metric[0]} {fmt(metric[1])}" if metric else "-",
                data,
                src,
                age(mv.created),
            ]
        )
    return Table(
        ["model", "version", "aliases", "size", "method", "metric", "dataset", "job@step", "age"],
        rows,
        title=f"versions of {model}" if model else "models",
        empty="no models yet: %aios publish JOB --as MODEL" if model is None else f"no versions of {model}",
    )


__all__ = [
    "ModelVersion",
    "list_models",
    "model_names",
    "set_alias",
    "delete",
    "get",
    "resolve",
    "versions",
    "models_table",
]
