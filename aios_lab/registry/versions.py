"""Registry rows in the catalog: model versions, aliases, listing, deletion and version resolution."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import atomic, config, metric_names as mn
from ..catalog import catalog, deleted_version, retire
from ..errors import Conflict, InvalidInput, NotFound
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
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # promote's, newest last (catalog only)

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
        rows += [[f"evaluation {e['id']}", _evaluation_line(e)] for e in self.evaluations]
        return Table(["", ""], rows, title=self.ref)

    def __str__(self) -> str:
        return str(self.table())

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()

    def __repr__(self) -> str:
        return f"<ModelVersion {self.ref} {fmt_bytes(self.nbytes)} {self.manifest_sha256[:12]}>"


def _from_row(
    r: Any,
    aliases: dict[tuple[str, int], list[str]] | None = None,
    evaluations: dict[tuple[str, int], list[dict[str, Any]]] | None = None,
) -> ModelVersion:
    if aliases is None:
        aliases = _aliases(r["name"])
    if evaluations is None:
        evaluations = _evaluations(r["name"], int(r["version"]))
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
        evaluations=evaluations.get((r["name"], int(r["version"])), []),
    )


def _evaluations(model: str | None = None, version: int | None = None) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Promote's evaluations by (model, version), oldest first: kept in the catalog, versions being immutable."""
    q, args = "SELECT * FROM evaluations", []
    if model is not None:
        q, args = q + " WHERE model=?", [model]
        if version is not None:
            q, args = q + " AND version=?", [*args, version]
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in catalog().query(q + " ORDER BY id", tuple(args)):
        e = dict(r)
        e["metrics"], e["conditions"], e["passed"] = (
            json.loads(e["metrics"]),
            json.loads(e["conditions"]),
            bool(e["passed"]),
        )
        out.setdefault((e["model"], int(e["version"])), []).append(e)
    return out


def _evaluation_line(e: dict[str, Any]) -> str:
    """One evaluation as text: where, the numbers, and what promote decided."""
    data = f"{e['dataset']}@{e['dataset_version']}:{e['split']}" if e.get("dataset") else "no data"
    numbers = ", ".join(f"{k} {fmt(v)}" for k, v in e["metrics"].items())
    return f"{data}: {numbers or '-'}; {e['decision']}" + (f" {e['alias']}" if e.get("alias") else "")


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
        raise InvalidInput(
            f"alias {alias!r} is reserved (a version number or 'latest'); pick a word such as production"
        )
    return alias


_REF = re.compile(r"^(?P<name>[^:@\s]+)(?:[:@](?P<version>[^:@\s]+))?$")


def parse_ref(ref: str, what: str = "model") -> tuple[str, int | str | None]:
    """``NAME``, ``NAME:V`` (``vN``), ``NAME:ALIAS`` (or with ``@``) -> (name, version number, alias or None)."""
    m = _REF.fullmatch(str(ref).strip())
    if not m:
        raise InvalidInput(f"{what} {ref!r}: give a registry model as NAME, NAME:VERSION or NAME:ALIAS")
    version = m["version"]
    if version is not None and re.fullmatch(r"v?\d+", version):
        return m["name"], int(version.lstrip("v"))
    return m["name"], version


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
        raise NotFound(f"no model named {model!r} in the registry; `%aios models` lists them")
    if version is None or version == "latest":
        return have[-1]
    if isinstance(version, str) and re.fullmatch(r"v?\d+", version):
        version = int(version.lstrip("v"))
    if isinstance(version, int) and not isinstance(version, bool):
        if version not in have and deleted_version("models", model, version):
            raise NotFound(f"version {version} of model {model!r} was deleted; `%aios models {model}` lists the rest")
        if version not in have:
            raise NotFound(f"model {model!r} has no version {version}; it has {', '.join(map(str, have))}")
        return version
    if not isinstance(version, str):
        raise InvalidInput(f"version {version!r}: give a number, an alias or nothing for the newest")
    r = catalog().one("SELECT version FROM aliases WHERE model=? AND alias=?", (model, version))
    if r is None:
        names = sorted({a for v in _aliases(model).values() for a in v})
        raise NotFound(f"model {model!r} has no alias {version!r}" + (f"; it has {', '.join(names)}" if names else ""))
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
    aliases, evaluations = _aliases(model), _evaluations(model)
    return [_from_row(r, aliases, evaluations) for r in catalog().query(q + " ORDER BY name, version", args)]


def set_alias(model: str, alias: str, version: int | str | None) -> ModelVersion | None:
    """Point ``alias`` (e.g. staging) at ``version`` of ``model``; ``version=None`` removes the alias.

    A protected alias (``production``, or one marked with ``registry.protect``) that points somewhere is
    refused: move it with ``aios.promote`` or ``aios.rollback``."""
    from .aliases import check_plain_move, move

    check_alias(alias)
    cat = catalog()
    if version is None:
        check_name(model, "model")
        if cat.one("SELECT 1 FROM aliases WHERE model=? AND alias=?", (model, alias)) is None:
            raise NotFound(f"model {model!r} has no alias {alias!r}")
        check_plain_move(model, alias, None)
        with cat.tx() as db:
            old_v = move(db, model, alias, None, "remove")
        cat.audit("alias.remove", f"{model}@{alias}", previous=old_v)
        return None
    if isinstance(version, str) and not re.fullmatch(r"v?\d+", version):
        raise InvalidInput(f"set_alias takes a version number, not {version!r}")
    v = resolve(model, int(str(version).lstrip("v")))
    check_plain_move(model, alias, v)
    with cat.tx() as db:
        old_v = move(db, model, alias, v, "alias")
    mv = get(model, v)
    cat.audit("alias", f"{model}@{alias}", version=v, previous=old_v, manifest_sha256=mv.manifest_sha256)
    return mv


def delete(model: str, version: int | str | None = None, force: bool = False) -> list[ModelVersion]:
    """Remove one version (``MODEL@V`` or ``version=``), or every version when none is given: rows, then files.

    Refused while an alias points at a version, unless ``force`` (the alias goes too). Each deletion is
    written to the audit log, and the number is never given out again.
    """
    if isinstance(model, str) and "@" in model:
        if version is not None:
            raise InvalidInput(f"{model!r} names a version already; drop the separate version {version!r}")
        model, _, version = model.partition("@")
    doomed = [get(model, version)] if version is not None else list_models(model)
    if not doomed:
        raise NotFound(f"no model named {model!r} in the registry; `%aios models` lists them")
    aliased = [mv for mv in doomed if mv.aliases]
    if aliased and not force:
        mv = aliased[0]
        raise Conflict(
            f"{mv.ref} is aliased as {', '.join(mv.aliases)}; move the alias first "
            f"(`%aios model alias {mv.name} ALIAS VERSION`) or delete with --force"
        )
    from .aliases import move

    cat = catalog()
    with cat.tx() as db:
        for mv in doomed:
            for alias in mv.aliases:  # only with force: the alias goes with the version, recorded as a move
                move(db, mv.name, alias, None, "delete", check=False)
            db.execute("DELETE FROM models WHERE name=? AND version=?", (mv.name, mv.version))
            retire(db, "models", mv.name, mv.version, mv.manifest_sha256)
    for mv in doomed:
        atomic.discard(models_dir(mv.name) / f"v{mv.version}")
        cat.audit("delete", mv.ref, manifest_sha256=mv.manifest_sha256, aliases=mv.aliases, force=bool(force))
    return doomed


def _headline(metrics: dict[str, Any]) -> str:
    """The metrics column: accuracy (or mse, else loss), and perplexity for a language model."""
    shown = [k for k in (mn.ACCURACY, mn.MSE) if isinstance(metrics.get(k), (int, float))][:1]
    if not shown and isinstance(metrics.get(mn.LOSS), (int, float)):
        shown = [mn.LOSS]
    if isinstance(metrics.get(mn.PERPLEXITY), (int, float)):
        shown.append(mn.PERPLEXITY)
    return ", ".join(f"{k} {fmt(metrics[k])}" for k in shown) or "-"


SHORT_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _origin(lineage: dict[str, Any]) -> str:
    """Where a version came from: ``JOB@STEP``, an imported checkpoint (``hf:ORG/REPO@REV`` or its path)."""
    if lineage.get("imported"):
        src = str(lineage.get("source") or "-")
        return f"{src}@{lineage['revision']}" if lineage.get("revision") else src
    return f"{lineage.get('job') or '-'}@{lineage.get('checkpoint_step', '-')}"


def models_table(model: str | None = None) -> Table:
    """``%aios models``: one row per version with aliases, size, metrics and lineage."""
    rows = []
    for mv in list_models(model):
        metric = _headline(mv.metrics)
        lin = mv.lineage
        src = _origin(lin)
        data = f"{lin['dataset']}@{lin.get('dataset_version')}" if lin.get("dataset") else "-"
        rows.append(
            [
                mv.name,
                mv.version,
                ", ".join(mv.aliases) or "-",
                fmt_bytes(mv.nbytes),
                lin.get("method") or SHORT_DTYPES.get(lin.get("dtype"), "fp32"),
                metric,
                data,
                src,
                age(mv.created),
            ]
        )
    return Table(
        ["model", "version", "aliases", "size", "method", "metric", "dataset", "from", "age"],
        rows,
        title=f"versions of {model}" if model else "models",
        empty="no models yet: %aios publish JOB --as MODEL" if model is None else f"no versions of {model}",
    )


__all__ = [
    "ModelVersion",
    "parse_ref",
    "list_models",
    "model_names",
    "set_alias",
    "delete",
    "get",
    "resolve",
    "versions",
    "models_table",
]
