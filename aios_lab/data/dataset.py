"""The Dataset handle and declare/list/get: catalog rows in ``datasets`` pointing at zarr versions."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic, config
from ..catalog import catalog, deleted_version, next_version
from ..errors import InvalidInput, NotFound
from ..names import check_name
from . import sources, split as splits, stream, zarr_store


@dataclass(frozen=True)
class Dataset:
    """One immutable version of a dataset: what the catalog knows, plus readers for its zarr arrays."""

    name: str
    version: int
    hash: str
    path: str
    source: str
    seed: int
    splits: dict[str, int]
    schema: dict[str, Any]
    nbytes: int
    created: float
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def task(self) -> str:
        return self.schema["task"]

    @property
    def n_classes(self) -> int | None:
        return self.schema.get("n_classes")

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.schema["x"]["shape"])

    @property
    def feature_dtype(self) -> str:
        return self.schema["x"]["dtype"]

    @property
    def target_shape(self) -> tuple[int, ...]:
        return tuple(self.schema["y"]["shape"])

    @property
    def target_dtype(self) -> str:
        return self.schema["y"]["dtype"]

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"

    def group(self):
        """The version's zarr group, read-only."""
        import zarr

        if "group" not in self._cache:
            self._cache["group"] = zarr.open_group(self.path, mode="r")
        return self._cache["group"]

    def arrays(self, split: str = "train"):
        """``(x, y)`` zarr arrays of one split (nothing is read until sliced)."""
        self._check_split(split)
        g = self.group()
        return g[f"{split}/x"], g[f"{split}/y"]

    @property
    def extra(self) -> dict[str, dict[str, Any]]:
        """The per-row arrays each split holds beside x and y (``{name: {"dtype", "shape"}}``; a tokenized
        language-model dataset has ``mask`` and ``segments``)."""
        return dict(self.schema.get("extra") or {})

    @property
    def tokenizer(self) -> dict[str, Any] | None:
        """The registry tokenizer the data was made with (``{"model", "version", "sha256", ...}``), or None."""
        return self.schema.get("tokenizer")

    def extra_arrays(self, split: str = "train") -> dict[str, Any]:
        """The extra zarr arrays of one split by name (empty for datasets without any), rows aligned with x."""
        self._check_split(split)
        g = self.group()
        return {name: g[f"{split}/{name}"] for name in self.extra}

    def load(self, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of one split as numpy arrays in memory."""
        x, y = self.arrays(split)
        return x[...], y[...]

    def to_json(self) -> dict[str, Any]:
        """The JSON model the CLI, widgets and the sidebar share."""
        return {
            "name": self.name,
            "version": self.version,
            "hash": self.hash,
            "path": self.path,
            "source": self.source,
            "seed": self.seed,
            "splits": dict(self.splits),
            "schema": self.schema,
            "nbytes": self.nbytes,
            "created": self.created,
            "task": self.task,
            "n_classes": self.n_classes,
            "feature_shape": list(self.feature_shape),
            "feature_dtype": self.feature_dtype,
            "extra": self.extra,
            "tokenizer": self.tokenizer,
        }

    def show(self):
        """Schema, split sizes, class balance and a picture of samples."""
        from .show import show

        return show(self)

    def delete(self, force: bool = False) -> None:
        """Delete this version (refused while a job or a model version refers to it, unless ``force``)."""
        from .delete import delete

        delete(self.name, self.version, force=force)

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise NotFound(f"dataset {self.ref} has no split {split!r}; it has {', '.join(self.splits)}")

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in self.splits.items())
        extra = f", {self.n_classes} classes" if self.n_classes else ""
        return f"Dataset({self.ref}, {self.task}{extra}, x {self.feature_dtype}{list(self.feature_shape)}, {sizes})"

    def _repr_html_(self) -> str:
        from .show import summary_table

        return summary_table(self)._repr_html_()


def dataset(
    name: str,
    source: str | Mapping[str, Any] | None = None,
    split: str | Mapping[str, float] | None = None,
    seed: int = 0,
    target: str | None = None,
    user_ns: Mapping[str, Any] | None = None,
    block: int | None = None,
    tokenizer: str | None = None,
    format: str | None = None,
    pack: bool = False,
) -> Dataset:
    """Declare ``name`` from ``source`` (same content -> the existing version), or get it when source is None.

    ``source`` is a SOURCE string or a dict of arrays (``{"x": X, "y": y}``); ``vars:X,y`` reads ``user_ns``.
    ``jsonl:PATH`` with ``tokenizer`` (a registry language model, ``NAME[:V|ALIAS]``) and ``format``
    (text | completion | chat) tokenizes documents into ``block``-token rows, packed with ``pack``
    (see :mod:`aios_lab.data.lm_dataset`).
    """
    check_name(name, "dataset")
    if source is None:
        return get(name)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise InvalidInput(f"seed must be an integer, got {seed!r}")
    fractions = splits.parse(split)
    if (isinstance(source, str) and source.strip().startswith("jsonl:")) or tokenizer is not None:
        if tokenizer is None or format is None:
            raise InvalidInput(
                "jsonl:PATH is tokenized for a language model: add --tokenizer MODEL and --format text|completion|chat"
            )
        if not isinstance(source, str):
            raise InvalidInput("--tokenizer tokenizes jsonl:PATH sources; give --from jsonl:PATH")
        from .lm_dataset import tokenize

        parts, schema, label = tokenize(source, tokenizer, format, block, bool(pack), fractions, int(seed))
    else:
        if format is not None or pack:
            raise InvalidInput("--format and --pack apply to jsonl:PATH sources tokenized with --tokenizer MODEL")
        if isinstance(source, str) and stream.is_zarr(source.strip()):
            return _declare_streamed(name, source.strip(), fractions, int(seed), target)
        raw = sources.read(source, target=target, user_ns=user_ns, block=block)
        x, y, schema = _normalise(raw)
        parts = {k: (x[idx], y[idx]) for k, idx in splits.assign(len(x), fractions, int(seed)).items()}
        label = sources.label(source)
    digest = zarr_store.content_hash(parts, schema)
    found = _by_hash(name, digest)
    if found is not None:
        return found
    sizes = {k: int(len(part[0])) for k, part in parts.items()}
    attrs = {
        "name": name,
        "hash": digest,
        "source": label,
        "seed": int(seed),
        "splits": sizes,
        "fractions": fractions,
        "schema": schema,
    }
    with atomic.staged("dataset", name) as tmp:
        zarr_store.write_group(tmp, parts, attrs)
        atomic.seal(tmp, read_only=True)
        return _publish(name, tmp, digest, label, int(seed), sizes, schema, zarr_store.disk_bytes(tmp))


def _declare_streamed(name: str, source: str, fractions: dict[str, float], seed: int, target: str | None) -> Dataset:
    """A zarr store (a path or URL) written into a version block by block, never loaded whole (see ``stream``)."""
    with atomic.staged("dataset", name) as tmp:
        group, rec = stream.declare(source, fractions, seed, tmp, target)
        found = _by_hash(name, rec["hash"])
        if found is not None:
            return found
        attrs = {"name": name, "hash": rec["hash"], "source": source, "seed": seed, "splits": rec["splits"]}
        zarr_store.write_attrs(group, {**attrs, "fractions": fractions, "schema": rec["schema"]})
        atomic.seal(tmp, read_only=True)
        nbytes = zarr_store.disk_bytes(tmp)
        return _publish(name, tmp, rec["hash"], source, seed, rec["splits"], rec["schema"], nbytes)


def datasets(name: str | None = None) -> list[Dataset]:
    """Every version of every dataset (or of ``name``), by name then version."""
    if name is not None:
        check_name(name, "dataset")
        rows = catalog().query("SELECT * FROM datasets WHERE name=? ORDER BY version", (name,))
    else:
        rows = catalog().query("SELECT * FROM datasets ORDER BY name, version")
    return [_from_row(r) for r in rows]


def get(name: str, version: int | str | None = None) -> Dataset:
    """A dataset version (``None`` or ``"latest"`` for the newest); also accepts ``"name:vN"``."""
    if isinstance(name, str) and ":" in name and version is None:
        name, _, version = name.partition(":")
    check_name(name, "dataset")
    if isinstance(version, str):
        text = version.lower()
        if text == "latest":
            version = None
        elif text.lstrip("v").isdigit():
            version = int(text.lstrip("v"))
        else:
            raise InvalidInput(f"bad version {version!r} for dataset {name!r}; give a number like 2 or v2")
    if version is None:
        row = catalog().one("SELECT * FROM datasets WHERE name=? ORDER BY version DESC LIMIT 1", (name,))
    else:
        row = catalog().one("SELECT * FROM datasets WHERE name=? AND version=?", (name, int(version)))
    if row is None:
        if version is not None and deleted_version("datasets", name, int(version)):
            raise NotFound(f"version {version} of dataset {name!r} was deleted; `%aios datasets {name}` lists the rest")
        which = f"version {version} of dataset {name!r}" if version is not None else f"dataset {name!r}"
        raise NotFound(f"no {which}; `%aios datasets` lists them, `%aios dataset {name} --from SOURCE` declares one")
    return _from_row(row)


# -- internals -----------------------------------------------------------------------------------


def _normalise(raw: sources.Raw) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Settle dtypes and the task: lm -> int32 tokens; integer targets -> classification; floats -> regression."""
    info = {k: v for k, v in raw.info.items() if v is not None}
    if raw.task == "lm":
        x, y = raw.x.astype(np.int32, copy=False), raw.y.astype(np.int32, copy=False)
        task, n_classes = "lm", 256
    else:
        x = np.asarray(raw.x, dtype=np.float32)
        y = raw.y
        if y.dtype.kind in "biu":
            if y.ndim != 1:
                raise InvalidInput(
                    f"integer targets must be one label per sample, got shape {y.shape[1:]} per sample; "
                    "give class indices (or float targets for regression)"
                )
            if y.min() < 0 or "classes" not in info and y.max() >= max(2 * len(np.unique(y)), 1024):
                values, y = np.unique(y, return_inverse=True)
                info["classes"] = [str(v) for v in values]
            y = y.astype(np.int32)
            task = "classification"
            n_classes = max(len(info.get("classes", ())), int(y.max()) + 1)
        else:
            y = np.asarray(y, dtype=np.float32)
            if not np.isfinite(y).all():
                raise InvalidInput("targets contain NaN or infinity; fill or drop those rows")
            task, n_classes = "regression", None
    schema = {
        "task": task,
        "n_classes": n_classes,
        "x": {"dtype": str(x.dtype), "shape": list(x.shape[1:])},
        "y": {"dtype": str(y.dtype), "shape": list(y.shape[1:])},
        **info,
    }
    return x, y, schema


def _by_hash(name: str, digest: str) -> Dataset | None:
    row = catalog().one("SELECT * FROM datasets WHERE name=? AND hash=?", (name, digest))
    return _from_row(row) if row is not None else None


def _publish(
    name: str,
    tmp: Path,
    digest: str,
    source: str,
    seed: int,
    sizes: dict[str, int],
    schema: dict[str, Any],
    nbytes: int,
) -> Dataset:
    """Rename the sealed staging folder to ``vN`` and insert its row in one catalog transaction."""
    cat = catalog()
    final: Path | None = None
    try:
        with cat.tx() as db:
            row = db.execute("SELECT * FROM datasets WHERE name=? AND hash=?", (name, digest)).fetchone()
            if row is not None:  # someone declared the same content meanwhile
                return _from_row(row)
            version = next_version(db, "datasets", name)
            final = config.named("datasets", name, f"v{version}")
            atomic.publish(tmp, final)  # replaces a folder a crash left between rename and commit
            db.execute(
                "INSERT INTO datasets (name, version, hash, path, source, seed, splits, schema, nbytes, "
                "created) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    name,
                    version,
                    digest,
                    str(final),
                    source,
                    seed,
                    json.dumps(sizes),
                    json.dumps(schema),
                    nbytes,
                    time.time(),
                ),
            )
    except BaseException:
        if final is not None and _by_hash(name, digest) is None:
            atomic.discard(final)
        raise
    cat.audit("dataset.declare", f"{name}:v{version}", source=source, hash=digest)
    return get(name, version)


def _from_row(row: Any) -> Dataset:
    return Dataset(
        name=row["name"],
        version=row["version"],
        hash=row["hash"],
        path=row["path"],
        source=row["source"],
        seed=row["seed"],
        splits=json.loads(row["splits"]),
        schema=json.loads(row["schema"]),
        nbytes=row["nbytes"],
        created=row["created"],
    )
