"""``%aios lineage MODEL[:V]``: the chain that made a model version, with the audit entries of each link.

dataset version -> job (git commit, notebook, cell, config) -> variant -> model version -> aliases on it;
an imported version starts from its source instead. Each link is read from what outlives the others: the
version's own lineage (kept with it), then the catalog rows that still exist (dataset, job), then the
audit log, so a deleted job or dataset still shows what it was.

>>> aios.lineage("digits", "production").to_json()["chain"][1]["details"]["commit"]
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from ..catalog import catalog
from ..render import Table, fmt
from .versions import ModelVersion, get, parse_ref

TRAIN_KEYS = ("model", "steps", "batch", "lr", "optimizer", "shard", "precision", "seed")


@dataclass
class Link:
    """One step of the chain: what it is, its facts, and the audit rows about it (oldest first)."""

    link: str  # dataset | source | job | variant | model | alias
    object: str
    details: dict[str, Any] = field(default_factory=dict)
    audit: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Lineage:
    """The chain of one model version; a Table in a notebook or terminal, ``to_json()`` for programs."""

    model: str
    version: int
    chain: list[Link]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "chain": [{"link": k.link, "object": k.object, "details": k.details, "audit": k.audit} for k in self.chain],
        }

    def table(self) -> Table:
        rows: list[list[Any]] = []
        for k in self.chain:
            facts = ", ".join(f"{n}={_short(v)}" for n, v in k.details.items() if v not in (None, "", [], {}))
            rows.append([k.link, k.object, facts or "-"])
            for a in k.audit:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a["time"]))
                said = " ".join(f"{n}={_short(v)}" for n, v in a["details"].items() if v is not None)
                rows.append(["", f"  audit #{a['id']}", f"{when} {a['user']} {a['action']} {a['object']} {said}"])
        return Table(["link", "what", "details"], rows, title=f"lineage of {self.model}:v{self.version}")

    def __str__(self) -> str:
        return str(self.table())

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()


def lineage(model: str, version: int | str | None = None) -> Lineage:
    """The chain behind ``model`` at ``version`` (a number, an alias, None for the newest; or ``MODEL:V``)."""
    if version is None and isinstance(model, str) and (":" in model or "@" in model):
        model, version = parse_ref(model)
    mv = get(model, version)
    lin = mv.lineage
    chain: list[Link] = []
    if lin.get("imported") or lin.get("source"):
        chain.append(Link("source", str(lin.get("source")), {k: lin.get(k) for k in ("revision", "commit", "repo")}))
    if lin.get("dataset"):
        chain.append(_dataset_link(lin))
    if lin.get("job"):
        chain.append(_job_link(lin))
    if lin.get("variant") or lin.get("method"):
        name = f"{lin.get('job')}/{lin.get('variant') or lin.get('method')}"
        chain.append(Link("variant", name, {"method": lin.get("method")}, _audit([name], ("compress",))))
    chain.append(_model_link(mv))
    for alias in mv.aliases:
        obj = f"{mv.name}@{alias}"
        rows = [a for a in _audit([obj]) if a["details"].get("version") in (mv.version, None)]
        chain.append(Link("alias", obj, {"version": mv.version}, rows))
    return Lineage(mv.name, mv.version, chain)


def _dataset_link(lin: dict[str, Any]) -> Link:
    name, version = lin["dataset"], lin.get("dataset_version")
    ref = f"{name}:v{version}"
    details: dict[str, Any] = {"hash": lin.get("dataset_hash")}
    row = catalog().one("SELECT source, splits FROM datasets WHERE name=? AND version=?", (name, version))
    if row is not None:
        details.update(source=row["source"], splits=json.loads(row["splits"]))
    else:
        details["deleted"] = True
    return Link("dataset", f"{name}@{version}", details, _audit([ref], ("dataset.declare", "dataset.delete")))


def _job_link(lin: dict[str, Any]) -> Link:
    name = lin["job"]
    row = catalog().one("SELECT config, state FROM jobs WHERE name=?", (name,))
    config = json.loads(row["config"]) if row is not None else {}
    prov = lin.get("provenance") or config.get("provenance") or {}
    git = prov.get("git") or {}
    train = config.get("train") or {}
    details = {
        "commit": git.get("commit"),
        "dirty": git.get("dirty"),
        "repo": git.get("root"),
        "notebook": prov.get("notebook"),
        "script": prov.get("script"),
        "cell_sha256": prov.get("cell_sha256"),
        "checkpoint_step": lin.get("checkpoint_step"),
        "state": row["state"] if row is not None else "deleted",
        "config": {k: train[k] for k in TRAIN_KEYS if k in train},
    }
    if not prov:
        details["provenance"] = "not recorded"
    return Link("job", name, details, _audit([name], ("job.submit", "job.resume", "job.delete")))


def _model_link(mv: ModelVersion) -> Link:
    details = {
        "manifest_sha256": mv.manifest_sha256,
        "created_by": mv.created_by,
        "code_hash": mv.lineage.get("code_hash"),
    }
    return Link("model", mv.ref, details, _audit([mv.ref], ("publish", "import", "promote.evaluate", "delete")))


def _audit(objects: list[str], actions: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Audit rows whose object is exactly one of ``objects`` (and action one of ``actions``), oldest first."""
    marks = ",".join("?" * len(objects))
    q, args = f"SELECT * FROM audit WHERE object IN ({marks})", list(objects)
    if actions:
        q += f" AND action IN ({','.join('?' * len(actions))})"
        args += list(actions)
    out = []
    for r in catalog().query(q + " ORDER BY id", tuple(args)):
        d = dict(r)
        d["details"] = json.loads(d["details"])
        out.append(d)
    return out


def _short(v: Any) -> str:
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12]
    if isinstance(v, str) and len(v) == 40 and all(c in "0123456789abcdef" for c in v):
        return v[:10]  # a git commit
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return fmt(v)


__all__ = ["lineage", "Lineage", "Link"]
