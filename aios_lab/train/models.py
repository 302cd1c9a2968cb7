"""Model specs: resolve a name to a JSON spec, build it into ``Model(init, apply)``, define cell models.

A spec is JSON (``{"kind": "builtin"|"cell"|"module"|"lm", ...}``) so a worker process can rebuild the
model from the job's config alone. Cells are stored as source text, content-hashed, never pickled.
``lm`` is a registry language model (``train.lm_model``): its architecture, and the version whose
weights training starts from.
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

from ..errors import AiosError, Conflict, InvalidInput, NotFound
from ..names import check_name
from . import builtins
from .config import TASKS


@dataclass(frozen=True)
class Model:
    """A model as two pure functions: ``init(rng, x) -> params`` and ``apply(params, x) -> outputs``.

    ``pretrained() -> params`` (numpy, the shapes ``init`` makes): the weights training starts from instead
    of ``init``'s. ``frozen(dtype) -> tree`` (numpy) and ``frozen_shapes(dtype)``: a part that is not
    trained (a LoRA base); ``apply`` then takes it as a third argument, ``apply(params, x, frozen)``.
    """

    init: Callable[[jax.Array, jax.Array], Any]
    apply: Callable[..., jax.Array]
    spec: dict
    pretrained: Callable[[], Any] | None = None
    frozen: Callable[[Any], Any] | None = None
    frozen_shapes: Callable[[Any], Any] | None = None


def resolve(model: str | dict, **config: Any) -> dict:
    """The JSON spec for ``model``: a built-in, a ``%%aios model`` name (newest version), a registry language
    model ``NAME[:VERSION|ALIAS]``, or ``pkg.mod:attr``."""
    if isinstance(model, dict):
        spec = dict(model)
        spec["config"] = {**spec.get("config", {}), **config}
        return spec
    if model in builtins.BUILTINS:
        return {"kind": "builtin", "name": model, "config": config}
    cell_name, _, cell_version = model.partition("@")
    if ":" in model or _model_def(cell_name, None) is None:  # a cell of that name wins over a registry model
        from . import lm_model

        spec = lm_model.resolve(model)
        if spec is not None:
            if config:
                raise InvalidInput(f"model {model!r} is an imported language model; its --config is its own")
            return spec
    if ":" in model:
        mod, _, attr = model.partition(":")
        if not mod or not attr:
            raise InvalidInput(f"model {model!r}: write an importable target as package.module:attribute")
        return {"kind": "module", "target": model, "config": config}
    name, _, version = model.partition("@")
    check_name(name, "model")
    row = _model_def(name, int(version) if version else None)
    if row is None:
        raise NotFound(
            f"unknown model {model!r}: use a built-in ({', '.join(builtins.BUILTINS)}), "
            "package.module:attr, a language model from `%aios models`, or define it first with %%aios model NAME"
        )
    spec = json.loads(row["spec"])
    spec["config"] = {**spec.get("config", {}), **config}
    return spec


def build(
    spec: dict, task: str, n_outputs: int, input_shape: tuple, lora: dict | None = None, remat: bool = False
) -> Model:
    """Build ``spec`` into a Model whose outputs fit ``task`` with ``n_outputs`` (classes, targets or vocab).

    ``lora`` (``--lora``; a language model only) makes a Model whose params are low-rank adapters over a
    frozen base; ``remat`` recomputes a language model's layer activations in the backward pass."""
    kind, cfg = spec.get("kind"), dict(spec.get("config") or {})
    if kind == "lm":
        from . import lm_model

        return lm_model.build(spec, lora=lora, remat=remat)
    if lora is not None:
        raise InvalidInput(
            "--lora fine-tunes a language model: give --model NAME[:VERSION] of a model from "
            "`%aios model import` (`%aios models` lists them)"
        )
    if kind == "builtin":
        try:
            module = builtins.make(spec["name"], cfg, n_outputs, tuple(input_shape))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"model {spec['name']}: {exc}") from None
        return Model(module.init, module.apply, spec)
    if kind == "module":
        mod, _, attr = spec["target"].partition(":")
        try:
            obj = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as exc:
            raise InvalidInput(f"cannot import model {spec['target']!r}: {exc}") from None
        return Model(*_from_object(obj, cfg, n_outputs), spec)
    if kind == "cell":
        ns = _exec_cell(spec["source"], spec.get("name", "cell"))
        return Model(*_from_namespace(ns, cfg, n_outputs, spec.get("name", "cell")), spec)
    raise InvalidInput(f"unknown model spec kind {kind!r}")


def check(model: Model, task: str, n_outputs: int, x: np.ndarray) -> tuple:
    """Initialise ``model`` on a sample batch ``x`` of a dataset (shapes only); check its outputs fit ``task``
    with ``n_outputs``; return the output shape. Errors name the dataset's sample shape and how to check early.
    """
    if task not in TASKS:
        raise InvalidInput(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    x = jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype)
    name = model.spec.get("name") or model.spec.get("target") or "NAME"
    early = f"check a model on a dataset when you define it: %%aios model {name} --dataset DATASET"
    frozen = (model.frozen_shapes(np.float32),) if model.frozen_shapes is not None else ()
    try:
        params = jax.eval_shape(model.init, jax.random.key(0), x)
        out = jax.eval_shape(model.apply, params, x, *frozen)
    except AiosError:
        raise
    except Exception as exc:  # whatever the user's code raised
        raise InvalidInput(
            f"model {name} does not initialise on this dataset's samples of shape {x.shape[1:]} ({x.dtype}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; {early}"
        ) from None
    b = x.shape[0]
    want = {"classification": (b, n_outputs), "lm": (b, x.shape[-1], n_outputs)}.get(task)
    ok = out.shape == want if want else (out.shape[:1] == (b,) and int(np.prod(out.shape[1:])) == n_outputs)
    if not ok:
        raise InvalidInput(
            f"model {name} output shape {out.shape} does not fit a {task} task with {n_outputs} outputs on "
            f"this dataset's samples of shape {x.shape[1:]} (expected {want or (b, n_outputs)}); size the last "
            f"layer by n_outputs; {early}"
        )
    return tuple(out.shape)


def define(
    name: str,
    source: str,
    sample: np.ndarray | None = None,
    task: str = "classification",
    n_outputs: int | None = None,
) -> tuple[str, int]:
    """Store a ``%%aios model`` cell as a versioned, content-hashed definition once it runs and defines a model.

    With ``sample`` (a batch of the dataset it is meant for) and ``n_outputs`` it must also initialise on
    that batch and fit ``task``; without them no shape is assumed (a job checks it against its dataset).
    """
    check_name(name, "model")
    if name in builtins.BUILTINS:
        raise Conflict(f"{name!r} is a built-in model; choose another name")
    digest = hashlib.sha256(source.encode()).hexdigest()
    spec = {"kind": "cell", "name": name, "source": source, "config": {}}
    if sample is not None and n_outputs is not None:
        x = np.asarray(sample)
        check(build(spec, task, n_outputs, x.shape[1:]), task, n_outputs, x)
    else:
        build(spec, task, n_outputs or 1, ())  # runs the cell: it must define init/apply or a Module
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
        raise InvalidInput(f"model cell {name!r} failed to run: {type(exc).__name__}: {exc}") from None
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
        raise InvalidInput(
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
            raise InvalidInput(f"cannot construct model {obj.__name__}: {exc}") from None
    if isinstance(obj, nn.Module):
        return obj.init, obj.apply
    if callable(getattr(obj, "init", None)) and callable(getattr(obj, "apply", None)):
        return _with_outputs(obj.init, cfg, n_outputs), obj.apply
    raise InvalidInput(f"{obj!r} is neither a flax.linen.Module nor an object with init and apply")


def _with_outputs(init: Callable, cfg: dict, n_outputs: int) -> Callable:
    """Pass ``n_outputs`` and config keys to ``init`` when its signature asks for them."""
    try:
        params = inspect.signature(init).parameters
    except (TypeError, ValueError):
        return init
    extra = {k: v for k, v in {**cfg, "n_outputs": n_outputs}.items() if k in params}
    return (lambda rng, x: init(rng, x, **extra)) if extra else init


def prepare(spec: dict, ds: Any, init_from: str | None = None, lora: dict | None = None) -> dict:
    """The spec a job trains, checked against its dataset before anything is written: a language model
    (``--init-from`` another registry version of the same architecture, ``--lora`` targets that exist, a
    dataset tokenized with the same tokenizer); one-line InvalidInputs otherwise."""
    if spec.get("kind") == "lm":
        from . import lm_model

        return lm_model.prepare(spec, ds, init_from=init_from, lora=lora)
    if init_from is not None:
        raise InvalidInput("--init-from starts a language model from another version: give --model NAME of one")
    return spec


__all__ = ["Model", "resolve", "build", "check", "prepare", "define", "definitions", "TASKS"]
