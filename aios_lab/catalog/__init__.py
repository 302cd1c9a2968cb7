"""The catalog: datasets, jobs, metrics, models, endpoints, tokens and the audit log in one SQLite file."""
from .db import Catalog, catalog

__all__ = ["Catalog", "catalog"]
