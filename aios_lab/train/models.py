"""Model specs: resolve a name to a JSON spec, build it into ``Model(init, apply)``, define cell models.

A spec is JSON (``{"kind": "builtin"|"cell"|"module", ...}``) so a worker process can rebuild the
model from the job's config alone. Cells are stored as source text, content-hashed, never pickled.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from ..errors import AiosError
from ..names import check_name
from . import builtins

TASKS = ("classification", "regression", "lm")


@dataclass(frozen=True)
class Model:
    """A model as two pure functions: ``init(rng, x) -> params`` and ``apply(params, x) -> outputs``."""

    init: Callable[[jax.Array, jax.Array], Any]
    apply: Callable[[Any, jax.Array], jax.Array]
    spec: dict


def resolve(model: str | dict, **config: Any) -> dict:
    """The JSON spec for ``model``: a built-in, ``pkg.mod:attr``, or a ``%%aios model`` name (newest version)."""
    if isinstance(model, dict):
        spec = dict(model)
        spec["config"] = {**spec.get("config", {}), **config}
        return spec
    if model in builtins.BUILTINS:
        return {"kind": "builtin", "name": model, "config": config}
    if ":" in model:
        mod, _, attr = model.partition(":")
        if not mod or not attr:
            raise AiosError(f"model {model!r}: write an importable target as package.module:attribute")
        return {"kind": "module", "target": model, "config": config}
    name, _, version = model.partition("@")
    check_name(name, "model")
    row = _model_def(name, int(version) if version else None)
    if row is None:
        raise AiosError(
            f"unknown model {model!r}: use a built-in ({', '.join(builtins.BUILTINS)}), "
            "package.module:attr, or define it first with %%aios model NAME"
        )
    spec = json.loads(row["spec"])
    spec["config"] = {**spec.get("config", {}), **config}
    return spec


def build(spec: dict, task: str, n_outputs: int, input_shape: tuple) -> Model:
    """Build ``spec`` into a Model whose outputs fit ``task`` with ``n_outputs`` (classes, targets or vocab)."""
    kind, cfg = spec.get("kind"), dict(spec.get("config") or {})
    if kind == "builtin":
        try:
            module = builtins.make(spec["name"], cfg, n_outputs, tuple(input_shape))
        except (TypeError, ValueError) as exc:
            raise AiosError(f"model {spec['name']}: {exc}") from None
        return Model(module.init, module.apply, spec)
    if kind == "module":
        mod, _, attr = spec["target"].partition(":")
        try:
            obj = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as exc:
            raise AiosError(f"cannot import model {spec['target']!r}: {exc}") from None
        return Model(*_from_object(obj, cfg, n_outputs), spec)
    if kind == "cell":
        ns = _exec_cell(spec["source"], spec.get("name", "cell"))
        return Model(*_from_namespace(ns, cfg, n_outputs, spec.get("name", "cell")), spec)
    raise AiosError(f"unknown model spec kind {kind!r}")


def check(model: Model, task: str, n_outputs: int, x: np.ndarray) -> tuple:
    """Initialise ``model`` on a sample batch ``x`` (shapes only); check its outputs fit ``task``; return the shape."""
    if task not in TASKS:
        raise AiosError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    x = jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype)
    try:
        params = jax.eval_shape(model.init, jax.random.key(0), x)
        out = jax.eval_shape(model.apply, params, x)
    except AiosError:
        raise
    except Exception as exc:  # whatever the user's code raised
        raise AiosError(
            f"model does not initialise on a batch of shape {x.shape}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    b = x.shape[0]
    want = {"classification": (b, n_outputs), "lm": (*x.shape[:2], n_outputs)}.get(task)
    ok = out.shape == want if want else (out.shape[:1] == (b,) and int(np.prod(out.shape[1:])) == n_outputs)
    if not ok:
        raise AiosError(
            f"model output shape {out.shape} does not fit a {task} task with {n_outputs} outputs "
            f"(expected {want or (b, n_outputs)}); size the last layer by n_outputs"
        )
    return tuple(out.shape)


def define(
    name: str, source: str, sample: np.ndarray | None = None, task: str = "classification", n_outputs: int = 10
) -> tuple[str, int]:
    """Store a ``%%aios model`` cell as a versioned, content-hashed definition after checking it initialises."""
    check_name(name, "model")
    if name in builtins.BUILTINS:
        raise AiosError(f"{name!r} is a built-in model; choose another name")
    digest = hashlib.sha256(source.encode()).hexdigest()
    spec = {"kind": "cell", "name": name, "source": source, "config": {}}
    x = np.asarray(sample) if sample is not None else np.zeros((2, 16), np.int32 if task == "lm" else np.float32)
    check(build(spec, task, n_outputs, x.shape[1:]), task, n_outputs, x)
    from ..catalog import catalog, next_version

    cat = catalog()
    with cat.tx() as db:
        row = db.execute("SELECT version FROM model_defs WHERE name=? AND hash=?", (name, digest)).fetchone()
        if row:
            return name, int(row[0])
        version = next_version(db, "model_defs", name)
        spec["version"] = version
        db.execute(
            "INSERT INTO model_defs (name, version, hash, spec, created) VALUES (?,?,?,?,?)",
            (name, version, digest, json.dumps(spec), time.time()),
        )
    cat.audit("model.define", name, version=version, hash=digest)
    return name, int(version)


def definitions() -> list[dict]:
    """Every stored model definition, newest version last: name, version, hash, created."""
    from ..catalog import catalog

    rows = catalog().query("SELECT name, version, hash, created FROM model_defs ORDER BY name, version")
    return [dict(r) for r in rows]


def _model_def(name: str, version: int | None):
    from ..catalog import catalog

    if version is None:
        return catalog().one("SELECT * FROM model_defs WHERE name=? ORDER BY version DESC LIMIT 1", (name,))
    return catalog().one("SELECT * FROM model_defs WHERE name=? AND version=?", (name, version))


def _exec_cell(source: str, name: str) -> dict:
    """Run a model cell's source in a fresh module namespace; import errors become one-line AiosErrors."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    modname = f"aios_model_{name.replace('-', '_').replace('.', '_')}_{digest}"
    if modname in sys.modules:  # same source already run in this process
        return sys.modules[modname].__dict__
    module = types.ModuleType(modname)
    sys.modules[modname] = module  # dataclasses (flax Modules) look their module up here
    try:
        exec(compile(source, f"<%%aios model {name}>", "exec"), module.__dict__)
    except Exception as exc:
        del sys.modules[modname]
        raise AiosError(f"model cell {name!r} failed to run: {type(exc).__name__}: {exc}") from None
    return module.__dict__


def _from_namespace(ns: dict, cfg: dict, n_outputs: int, name: str) -> tuple[Callable, Callable]:
    """init/apply from a cell: ``init``+``apply`` functions, a ``model`` instance, or the one Module class defined."""
    import flax.linen as nn

    if callable(ns.get("init")) and callable(ns.get("apply")):
        return _with_outputs(ns["init"], cfg, n_outputs), ns["apply"]
    if isinstance(ns.get("model"), nn.Module):
        return ns["model"].init, ns["model"].apply
    classes = [
        v for v in ns.values() if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == ns["__name__"]
    ]
    if len(classes) != 1:
        raise AiosError(
            f"model cell {name!r} must define init(rng, x) and apply(params, x), a `model` "
            f"instance, or exactly one flax.linen.Module class (found {len(classes)})"
        )
    return _from_object(classes[-1], cfg, n_outputs)


def _from_object(obj: Any, cfg: dict, n_outputs: int) -> tuple[Callable, Callable]:
    """init/apply from a Module class or instance, or an object/module holding init and apply."""
    import flax.linen as nn

    if isinstance(obj, type) and issubclass(obj, nn.Module):
        fields = {f for f in getattr(obj, "__dataclass_fields__", {})}
        kw = dict(cfg)
        for key in ("n_outputs", "num_classes", "features"):
            if key in fields and key not in kw:
                kw[key] = n_outputs
        try:
            obj = obj(**kw)
        except TypeError as exc:
            raise AiosError(f"cannot construct model {obj.__name__}: {exc}") from None
    if isinstance(obj, nn.Module):
        return obj.init, obj.apply
    if callable(getattr(obj, "init", None)) and callable(getattr(obj, "apply", None)):
        return _with_outputs(obj.init, cfg, n_outputs), obj.apply
    raise AiosError(f"{obj!r} is neither a flax.linen.Module nor an object with init and apply")


def _with_outputs(init: Callable, cfg: dict, n_outputs: int) -> Callable:
    """Pass ``n_outputs`` and config keys to ``init`` when its signature asks for them."""
    try:
        params = inspect.signature(init).parameters
    except (TypeError, ValueError):
        return init
    extra = {k: v for k, v in {**cfg, "n_outputs": n_outputs}.items() if k in params}
    return (lambda rng, x: init(rng, x, **extra)) if extra else init


__all__ = ["Model", "resolve", "build", "check", "define", "definitions", "TASKS"]
