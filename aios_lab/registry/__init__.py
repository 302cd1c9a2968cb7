"""The model registry: immutable, verified model versions with signatures, metrics, lineage and aliases.

>>> mv = aios.publish("digits-mlp", variant="int8", as_="digits", alias="production")
>>> m = aios.registry.load("digits", "production")     # verifies the sha256 manifest first
>>> m.predict(x)

Layout of a version, for readers such as the serving process: see ``registry.publish``.
"""

from .load import LoadedModel, load, verify
from .publish import publish, publish_params
from .versions import ModelVersion, delete, get, list_models, model_names, models_table, resolve, set_alias, versions

__all__ = [
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
]
