"""Release gates: ``promote`` evaluates a candidate version, then moves an alias only if every condition holds;
``rollback`` moves an alias back to where it pointed before.

>>> aios.promote("digits", to="production", from_="staging", require="accuracy>=0.95,latency_p99_ms<=5",
...              on="digits:test")
>>> aios.rollback("digits", "production")

Both the evaluation and the decision are recorded: a row of the catalog's ``evaluations`` table (shown with
the version: ``ModelVersion.evaluations``, ``%aios model show``) and the audit log (``promote.evaluate``,
``promote``, ``alias``, ``rollback``). Without ``require`` promote is a plain (recorded) alias move.

Hooks for serving: ``conditions.register_metric(name, fn)`` lets ``--require`` read a per-version number
such as a canary's error rate; :func:`register_guard` lets a component refuse moving an alias it is using
(a canary on it). Over HTTP, promote and rollback are for admin tokens only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..catalog import catalog, user
from ..errors import Conflict, InvalidInput
from ..names import check_name
from ..render import Table, fmt
from . import aliases, conditions as cond, evaluation
from .versions import ModelVersion, check_alias, get, parse_ref, resolve

# fn(model, alias, action) -> a reason to refuse, or None. Registered by whoever uses an alias in a way a
# move would break (a canary splitting traffic on it); checked before promote evaluates and before rollback.
GUARDS: list[Callable[[str, str, str], str | None]] = []


def register_guard(fn: Callable[[str, str, str], str | None]) -> None:
    """Add a check run before an alias is promoted or rolled back (``action`` is "promote" or "rollback")."""
    if fn not in GUARDS:
        GUARDS.append(fn)


class GateFailed(Conflict):
    """A condition of ``--require`` did not hold: nothing moved (HTTP 409). ``.promotion`` has the details."""

    def __init__(self, message: str, promotion: Promotion):
        super().__init__(message)
        self.promotion = promotion


@dataclass
class Promotion:
    """What a promote measured and decided."""

    model: str
    alias: str
    version: int
    previous: int | None
    decision: str  # promoted | refused | unchanged
    metrics: dict[str, float] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)  # {"condition", "metric", "value", "ok"}
    data: str | None = None  # DATASET@V:SPLIT evaluated on
    evaluation_id: int | None = None

    @property
    def promoted(self) -> bool:
        return self.decision == "promoted"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "promoted": self.promoted}

    def table(self) -> Table:
        rows: list[list[Any]] = [[r["condition"], fmt(r["value"]), "yes" if r["ok"] else "NO"] for r in self.results]
        judged = {r["metric"] for r in self.results}
        rows += [[k, fmt(v), ""] for k, v in self.metrics.items() if k not in judged]
        was = f"v{self.previous}" if self.previous is not None else "nothing"
        title = f"{self.model}:v{self.version} -> {self.alias}: {self.decision} (was {was})"
        if self.data:
            title += f"; measured on {self.data}"
        return Table(["condition / metric", "value", "holds"], rows, title=title, empty="no conditions: a plain move")

    def __str__(self) -> str:
        return str(self.table())

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()


def promote(
    model: str,
    to: str,
    *,
    from_: str | None = None,
    version: int | str | None = None,
    require: str | None = None,
    on: str | None = None,
    samples: int = evaluation.LATENCY_SAMPLES,
    batch: int = 256,
) -> Promotion:
    """Move alias ``to`` of ``model`` to a candidate (``version``, the target of alias ``from_``, or the newest)
    if every condition of ``require`` holds on data ``on`` (``DATASET[@V][:SPLIT]``, default split test, else val).

    Raises :class:`GateFailed` (nothing moved; the evaluation and the refusal are recorded) when one does not.
    Bad input (a condition that does not parse, a metric that does not exist, a missing ``on``) is a one-line
    error and records nothing."""
    check_name(model, "model")
    check_alias(to)
    if from_ is not None and version is not None:
        raise InvalidInput("give the candidate as --from ALIAS or --version V, not both")
    wanted = cond.parse(require)
    if on is None and any(c.needs_data for c in wanted):
        names = ", ".join(c.metric for c in wanted if c.needs_data)
        raise InvalidInput(f"--require {names} is measured on data: add --on DATASET[:SPLIT]")
    if from_ is not None:
        check_alias(from_)
    candidate = resolve(model, from_ if from_ is not None else version)
    ds, split = _dataset(on) if on is not None else (None, None)
    _guard(model, to, "promote")
    cat = catalog()
    row = cat.one("SELECT version FROM aliases WHERE model=? AND alias=?", (model, to))
    before = int(row[0]) if row else None
    mv = get(model, candidate)

    values: dict[str, float] = {}
    for c in wanted:  # serving numbers first: cheap, and "no canary ran" is bad input that should not wait
        if c.metric in cond.PROVIDERS:
            values[c.metric] = cond.PROVIDERS[c.metric](model, candidate)
    if ds is not None:
        from .load import load

        loaded = load(model, candidate, audit=False)
        cond.check_task(wanted, loaded.task)
        evaluation.check_fit(loaded, ds)
        values.update(evaluation.evaluate(loaded, ds, split, batch=batch))
        x = ds.arrays(split)[0][: min(samples, ds.splits[split])]
        values.update(evaluation.latency(loaded, x, samples=samples))
    results = cond.judge(wanted, values)
    passed = all(r["ok"] for r in results)
    data = f"{ds.name}@{ds.version}:{split}" if ds is not None else None
    decision = ("unchanged" if before == candidate else "promoted") if passed else "refused"
    result = Promotion(model, to, candidate, before, decision, values, results, data)

    with cat.tx() as db:
        if passed and decision == "promoted":
            now = db.execute("SELECT version FROM aliases WHERE model=? AND alias=?", (model, to)).fetchone()
            if (int(now[0]) if now else None) != before:
                raise Conflict(f"{model}@{to} moved while the candidate was evaluated; run promote again")
            aliases.move(db, model, to, candidate, "promote")
        result.evaluation_id = db.execute(
            "INSERT INTO evaluations (model, version, dataset, dataset_version, split, metrics, conditions, passed, "
            "decision, alias, time, user) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                model,
                candidate,
                ds.name if ds is not None else None,
                ds.version if ds is not None else None,
                split,
                json.dumps(values),
                json.dumps(results),
                int(passed),
                decision,
                to,
                time.time(),
                user(),
            ),
        ).lastrowid
    if ds is not None:
        cat.audit(
            "promote.evaluate",
            mv.ref,
            data=data,
            metrics=values,
            manifest_sha256=mv.manifest_sha256,
            evaluation=result.evaluation_id,
        )
    cat.audit(
        "promote",
        f"{model}@{to}",
        version=candidate,
        previous=before,
        decision=decision,
        require=[r["condition"] for r in results],
        failed=[r["condition"] for r in results if not r["ok"]],
        evaluation=result.evaluation_id,
    )
    if decision == "promoted":
        cat.audit(
            "alias",
            f"{model}@{to}",
            version=candidate,
            previous=before,
            manifest_sha256=mv.manifest_sha256,
            via="promote",
        )
    if not passed:
        failed = "; ".join(f"{r['metric']} {fmt(r['value'])} fails {r['condition']}" for r in results if not r["ok"])
        stays = f"stays at v{before}" if before is not None else "is not set"
        where = f" on {data}" if data else ""
        raise GateFailed(f"promote refused: {mv.ref}{where}: {failed}; {model}@{to} {stays}", result)
    return result


def rollback(model: str, alias: str = "production") -> ModelVersion:
    """Move ``alias`` back to the version it pointed at before its last move (repeat to go further back)."""
    check_name(model, "model")
    check_alias(alias)
    _guard(model, alias, "rollback")
    current, target = aliases.rollback_target(model, alias)
    mv = get(model, target)  # NotFound, saying so, if that version was deleted since
    cat = catalog()
    with cat.tx() as db:
        now = db.execute("SELECT version FROM aliases WHERE model=? AND alias=?", (model, alias)).fetchone()
        if now is None or int(now[0]) != current:
            raise Conflict(f"{model}@{alias} moved meanwhile; run rollback again")
        aliases.move(db, model, alias, target, "rollback")
    cat.audit("rollback", f"{model}@{alias}", version=target, previous=current, manifest_sha256=mv.manifest_sha256)
    cat.audit(
        "alias",
        f"{model}@{alias}",
        version=target,
        previous=current,
        manifest_sha256=mv.manifest_sha256,
        via="rollback",
    )
    return get(model, target)


def _guard(model: str, alias: str, action: str) -> None:
    for fn in GUARDS:
        reason = fn(model, alias, action)
        if reason:
            raise Conflict(reason)


def _dataset(on: str) -> tuple[Any, str]:
    """``DATASET[@V][:SPLIT]`` (also ``DATASET:vN``) -> (Dataset, split); the split defaults to test, else val."""
    from ..data import get as get_dataset

    text = str(on).strip()
    name, sep, split = text.rpartition(":")
    if not sep or split.lstrip("v").isdigit():
        name, split = text, None
    name, version = parse_ref(name.replace(":", "@"), "dataset")
    if isinstance(version, str):
        raise InvalidInput(f"--on {on!r}: give DATASET[@VERSION][:SPLIT], e.g. digits:test or digits@2:val")
    ds = get_dataset(name, version)
    if split is None:
        split = next((s for s in ("test", "val") if s in ds.splits), None)
        if split is None:
            raise InvalidInput(f"{ds.ref} has no test or val split; name one: --on {ds.name}:SPLIT")
    if split not in ds.splits:
        raise InvalidInput(f"{ds.ref} has no split {split!r}; it has {', '.join(ds.splits)}")
    return ds, split


def _canary_guard(model: str, alias: str, action: str) -> str | None:
    """A running canary splits traffic against ``alias``: moving it would change what it is compared with."""
    from ..serve.canary import guard

    return guard(model, alias, action)


register_guard(_canary_guard)

__all__ = ["promote", "rollback", "Promotion", "GateFailed", "register_guard", "GUARDS"]
