"""A zarr store (a path or any fsspec URL) declared as a dataset version without loading it whole.

The source is read in place, block by block along the rows (whole source chunks, about ``BLOCK_BYTES`` at a
time); peak memory stays near a few blocks whatever the size of the data:

1. the targets are scanned once for their kind (classes or regression) and, where labels must be renumbered,
   their distinct values;
2. features and targets are converted block by block (float32 features checked finite; int32 labels) into raw
   scratch files in the staging area;
3. each split's rows, in the order the seeded permutation gives them (``split.assign``, the same as for data
   read into memory), are gathered from the scratch files a block at a time with ``pread`` (never a mapping,
   whose pages would count toward the process), hashed and written as the version's chunks.

The version is byte for byte the one an in-memory declaration of the same arrays makes (same hash).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInput
from . import remote, split as splits, zarr_store
from .sources import X_KEYS, Y_KEYS, first_line, refuse_unsafe_zarr

BLOCK_BYTES = 32 << 20  # the streaming memory budget: rows read, converted or gathered at a time
GAP_BYTES = 64 << 10  # rows of the scratch file closer than this are read together


def is_zarr(source: str) -> bool:
    """A zarr store: a ``.zarr`` path or URL, a local folder, or a URL with no file suffix we read otherwise."""
    path = source.split("::")[-1].rstrip("/")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".npz", ".npy", ".csv", ".jsonl", ".json", ".txt"):
        return False
    return suffix == ".zarr" or remote.is_url(source) or os.path.isdir(source)


def open_source(source: str, target: str | None = None) -> tuple[Any, Any, str, str]:
    """``(x, y, x key, y key)``: the source's zarr arrays (nothing read yet beyond metadata)."""
    import zarr

    url = remote.is_url(source)
    if not url and not os.path.exists(source):
        raise InvalidInput(f"zarr store {source!r} not found; check the path")
    refuse_unsafe_zarr(source)
    fix = "give a zarr group holding numeric arrays x and y"
    store = remote.zarr_store(source) if url else source
    with remote.errors(source):
        try:
            group = zarr.open_group(store, mode="r")
            keys = set(group.array_keys())
        except (InvalidInput, FileNotFoundError, PermissionError):
            raise
        except Exception as exc:
            if "credential" in str(exc).lower() or type(exc).__name__.endswith("CredentialsError"):
                raise
            raise InvalidInput(f"cannot open {source!r} as a zarr group ({first_line(exc)}); {fix}") from None
    xkey = next((k for k in X_KEYS if k in keys), None)
    ykey = next((k for k in ([target] if target else Y_KEYS) if k in keys), None)
    if xkey is None or ykey is None:
        raise InvalidInput(f"zarr group {source!r} holds arrays {sorted(keys)}; it needs arrays named x and y")
    try:
        x, y = group[xkey], group[ykey]
        x.dtype, y.dtype  # noqa: B018 - an unknown data type fails here, before anything is read
    except Exception as exc:
        raise InvalidInput(f"cannot read arrays {xkey}, {ykey} of {source!r} ({first_line(exc)}); {fix}") from None
    if x.ndim == 0 or y.ndim == 0:
        raise InvalidInput(f"{source} gave scalars; features and targets need one row per sample")
    if x.shape[0] == 0:
        raise InvalidInput(f"{source} holds no rows; give at least one sample per split")
    if x.shape[0] != y.shape[0]:
        raise InvalidInput(
            f"{source}: features have {x.shape[0]} rows but targets have {y.shape[0]}; give one target per sample"
        )
    if np.dtype(x.dtype).kind not in "biuf":
        raise InvalidInput(f"{xkey} is not numeric (dtype {x.dtype}); encode it as numbers first")
    if np.dtype(y.dtype).kind not in "biufOUST":
        raise InvalidInput(f"target {ykey} is not numeric (dtype {y.dtype}); encode it as numbers first")
    return x, y, xkey, ykey


def declare(
    source: str, fractions: dict[str, float], seed: int, tmp: Path, target: str | None = None
) -> tuple[Any, dict[str, Any]]:
    """Write the splits of zarr ``source`` into a new group in the staging folder ``tmp``; returns the group
    (its attributes are the caller's to write, last) and the version's ``hash``, ``splits`` and ``schema``.
    Bad data is a one-line InvalidInput."""
    import zarr

    x_src, y_src, xkey, ykey = open_source(source, target)
    n = int(x_src.shape[0])
    parts = splits.assign(n, fractions, seed)
    with remote.errors(source):
        labels = _scan_targets(y_src, ykey)
    feature_shape = tuple(int(d) for d in x_src.shape[1:]) or (1,)
    schema: dict[str, Any] = {
        "task": labels["task"],
        "n_classes": labels["n_classes"],
        "x": {"dtype": "float32", "shape": list(feature_shape)},
        "y": {"dtype": labels["dtype"], "shape": [int(d) for d in y_src.shape[1:]]},
        "target_name": ykey,
    }
    if labels.get("classes") is not None:
        schema["classes"] = labels["classes"]
    scratch = tmp.parent / f"{tmp.name}.scratch"
    scratch.mkdir(mode=0o700)
    try:
        with remote.errors(source):
            xs = _convert(x_src, scratch / "x", np.float32, feature_shape, lambda b: _features(b, source))
            ys = _convert(y_src, scratch / "y", np.dtype(labels["dtype"]), tuple(schema["y"]["shape"]), labels["map"])
        hasher = zarr_store.new_hash(schema)
        group = zarr.create_group(store=str(tmp), zarr_format=3)
        for name, idx in parts.items():
            sub = group.create_group(name)
            rows = zarr_store.chunk_rows(feature_shape, 4, len(idx))
            for key, (path, dtype, shape) in (("x", xs), ("y", ys)):
                out = zarr_store.create_array(sub, key, (len(idx), *shape), dtype, rows)
                hasher.update(zarr_store.hash_header(name, key, dtype, (len(idx), *shape)))
                _gather_into(out, path, dtype, shape, idx, rows, hasher)
    finally:
        for f in scratch.iterdir():
            f.unlink()
        scratch.rmdir()
    sizes = {k: int(len(v)) for k, v in parts.items()}
    return group, {"hash": hasher.hexdigest(), "splits": sizes, "schema": schema}


def _block_rows(arr: Any, row_bytes: int) -> int:
    """Rows per read: whole source chunks, about BLOCK_BYTES (at least one chunk)."""
    chunk = int(arr.chunks[0]) if getattr(arr, "chunks", None) else 1
    return max(chunk, (BLOCK_BYTES // max(1, row_bytes)) // chunk * chunk)


def _blocks(arr: Any) -> Any:
    n = int(arr.shape[0])
    row_bytes = int(np.prod(arr.shape[1:], dtype=np.int64)) * np.dtype(arr.dtype).itemsize if arr.ndim > 1 else 8
    step = _block_rows(arr, max(row_bytes, 1))
    for start in range(0, n, step):
        yield start, np.asarray(arr[start : start + step])


def _scan_targets(y: Any, ykey: str) -> dict[str, Any]:
    """What the targets are, read block by block: classes (ints or text labels) or regression values."""
    kind = np.dtype(y.dtype).kind
    if kind == "f":
        for _, b in _blocks(y):
            if not np.isfinite(b).all():
                raise InvalidInput("targets contain NaN or infinity; fill or drop those rows")
        return {"task": "regression", "n_classes": None, "dtype": "float32", "map": lambda b: b.astype(np.float32)}
    if y.ndim != 1:
        raise InvalidInput(
            f"integer targets must be one label per sample, got shape {tuple(y.shape[1:])} per sample; "
            "give class indices (or float targets for regression)"
        )
    values: np.ndarray | None = None
    lo, hi = None, None
    for _, b in _blocks(y):
        if kind in "OUST":
            if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in b):
                raise InvalidInput(f"target {ykey} has missing values; fill or drop those rows")
            b = b.astype(str)
        else:
            lo = int(b.min()) if lo is None else min(lo, int(b.min()))
            hi = int(b.max()) if hi is None else max(hi, int(b.max()))
        u = np.unique(b)
        values = u if values is None else np.union1d(values, u)
    assert values is not None
    if kind in "OUST" or lo < 0 or hi >= max(2 * len(values), 1024):
        classes = [str(v) for v in values]
        table = values

        def renumber(b: np.ndarray) -> np.ndarray:
            b = b.astype(str) if kind in "OUST" else b
            return np.searchsorted(table, b).astype(np.int32)

        return {
            "task": "classification",
            "n_classes": len(classes),
            "dtype": "int32",
            "classes": classes,
            "map": renumber,
        }
    return {
        "task": "classification",
        "n_classes": int(hi) + 1,
        "dtype": "int32",
        "map": lambda b: b.astype(np.int32),
    }


def _features(block: np.ndarray, source: str) -> np.ndarray:
    x = np.asarray(block, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    if not np.isfinite(x).all():
        raise InvalidInput(f"{source} has NaN or infinite features; fill or drop those rows")
    return x


def _convert(arr: Any, path: Path, dtype: np.dtype, shape: tuple, fn: Any) -> tuple[Path, np.dtype, tuple]:
    """Source rows, converted by ``fn`` block by block, appended to a raw scratch file."""
    with open(path, "wb") as f:
        for _, block in _blocks(arr):
            out = np.ascontiguousarray(fn(block), dtype=dtype)
            f.write(memoryview(out).cast("B"))
    return path, np.dtype(dtype), shape


def _gather_into(out: Any, path: Path, dtype: np.dtype, shape: tuple, idx: np.ndarray, rows: int, hasher: Any) -> None:
    """Write ``out[i] = scratch[idx[i]]`` in chunk-aligned blocks, hashing the bytes in order."""
    row_bytes = max(1, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
    per_write = max(rows, (BLOCK_BYTES // (row_bytes * rows)) * rows)
    fd = os.open(path, os.O_RDONLY)
    try:
        for start in range(0, len(idx), per_write):
            sel = idx[start : start + per_write]
            order = np.argsort(sel, kind="stable")
            block = np.empty((len(sel), row_bytes), np.uint8)
            block[order] = _read_rows(fd, sel[order], row_bytes)  # read in file order, placed in the split's
            block = block.view(dtype).reshape(len(sel), *shape)
            hasher.update(memoryview(block).cast("B"))
            out[start : start + len(sel)] = block
    finally:
        os.close(fd)


def _read_rows(fd: int, rows: np.ndarray, row_bytes: int) -> np.ndarray:
    """Rows ``rows`` (sorted) of a raw file as ``[len(rows), row_bytes]`` bytes: rows close together are read in
    one ``pread`` of at most BLOCK_BYTES, rows far apart each on their own (reads, not a mapping, so no page
    of the file ever counts toward this process's memory)."""
    out = np.empty((len(rows), row_bytes), np.uint8)
    near = max(1, GAP_BYTES // row_bytes)
    span = max(1, BLOCK_BYTES // row_bytes)
    cuts = np.flatnonzero(np.diff(rows) > near) + 1
    for a, end in zip(np.r_[0, cuts], np.r_[cuts, len(rows)]):
        while a < end:  # one run of near rows, read in pieces of at most ``span`` rows
            b = max(a + 1, a + int(np.searchsorted(rows[a:end], rows[a] + span)))
            lo, hi = int(rows[a]), int(rows[b - 1]) + 1
            raw = os.pread(fd, (hi - lo) * row_bytes, lo * row_bytes)
            if len(raw) != (hi - lo) * row_bytes:
                raise OSError(f"scratch file ended early at row {lo}")
            out[a:b] = np.frombuffer(raw, np.uint8).reshape(hi - lo, row_bytes)[rows[a:b] - lo]
            a = b
    return out


__all__ = ["declare", "is_zarr", "open_source", "BLOCK_BYTES"]
