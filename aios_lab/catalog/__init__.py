"""The catalog: datasets, jobs, metrics, models, endpoints, tokens and the audit log in one SQLite file."""

from .audit import audit_rows, audit_table
from .db import Catalog, catalog, deleted_version, next_version, retire, user

__all__ = [
    "Catalog",
    "catalog",
    "next_version",
    "retire",
    "deleted_version",
    "user",
    "audit_rows",
    "audit_table",
]
