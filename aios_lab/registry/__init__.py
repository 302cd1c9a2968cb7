"""The model registry: immutable, verified model versions with signatures, metrics, lineage and aliases.

>>> mv = aios.publish("digits-mlp", variant="int8", as_="digits", alias="production")
>>> m = aios.registry.load("digits", "production")     # verifies the sha256 manifest first
>>> m.predict(x)
>>> aios.registry.import_model("tiny", "hf:Qwen/Qwen3-0.6B")   # a Hugging Face language model
>>> aios.registry.load("tiny").generate("Hello", max_tokens=16).text
>>> aios.promote("digits", to="production", from_="staging", require="accuracy>=0.95", on="digits:test")
>>> aios.rollback("digits", "production"); aios.lineage("digits:production")

Layout of a version, for readers such as the serving process: see ``registry.publish`` (every version)
and ``registry.lm_artifact`` (what a language model adds).
"""

from .aliases import history as alias_history, protect, protected
from .lineage import Lineage, lineage
from .load import LoadedModel, load, verify
from .promote import GateFailed, Promotion, promote, register_guard, rollback
from .publish import publish, publish_params
from .versions import (
    ModelVersion,
    delete,
    get,
    list_models,
    model_names,
    models_table,
    parse_ref,
    resolve,
    set_alias,
    versions,
)

# language-model names load lazily (they import jax): name -> submodule
_LAZY = {
    "import_model": "lm_import",
    "describe": "lm_import",
    "load_lm": "lm_load",
    "cached_lm": "lm_load",
    "load_tokenizer": "lm_load",
    "LoadedLM": "lm_load",
    "LMParts": "lm_load",
    "lm_files": "lm_artifact",
    "tokenizer_sha": "lm_artifact",
}

__all__ = [
    "promote",
    "rollback",
    "protect",
    "protected",
    "alias_history",
    "register_guard",
    "GateFailed",
    "Promotion",
    "lineage",
    "Lineage",
    "load",
    "publish",
    "publish_params",
    "list_models",
    "model_names",
    "set_alias",
    "delete",
    "get",
    "resolve",
    "versions",
    "verify",
    "ModelVersion",
    "LoadedModel",
    "models_table",
    "parse_ref",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aios_lab.registry' has no attribute {name!r}")
