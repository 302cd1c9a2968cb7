"""Turn a SOURCE (vars:, sklearn:, .npz/.npy/.csv, text:, or a dict of arrays) into arrays in memory.

Files and text globs may be fsspec URLs (``s3://``, ``gs://``, ``hdfs://``, ...: :mod:`aios_lab.data.remote`);
a zarr store is never read whole: :mod:`aios_lab.data.stream` writes it into the version block by block.

Kernel variables come from the caller: the magic passes IPython's ``user_ns``; Python callers pass
``user_ns=`` (e.g. ``globals()``) or give the arrays themselves as a dict.
"""

from __future__ import annotations

import glob as globlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidInput
from . import remote

BUNDLED_SKLEARN = ("iris", "wine", "digits", "breast_cancer", "diabetes", "linnerud")
TARGET_COLUMNS = ("target", "label", "labels", "y", "class")
X_KEYS = ("x", "X", "features", "data", "inputs")
Y_KEYS = ("y", "Y", "targets", "target", "labels", "label")
DEFAULT_BLOCK = 128
SOURCE_HELP = "use vars:X,y, sklearn:NAME, PATH.npz|.npy|.csv, a zarr path or fsspec URL, or text:GLOB"


@dataclass
class Raw:
    """Features and targets read from a source, before splitting; ``task`` is set only when forced (lm)."""

    x: np.ndarray
    y: np.ndarray
    task: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # feature_names, target_name, classes, block


def label(source: str | Mapping[str, Any]) -> str:
    """How a source is recorded in the catalog: the string itself, or ``arrays:KEY,KEY`` for a dict."""
    if isinstance(source, Mapping):
        return "arrays:" + ",".join(map(str, source))
    return source.strip() if isinstance(source, str) else repr(source)


def read(
    source: str | Mapping[str, Any],
    *,
    target: str | None = None,
    user_ns: Mapping[str, Any] | None = None,
    block: int | None = None,
) -> Raw:
    """Read ``source`` into a :class:`Raw`; every mistake is a one-line InvalidInput and nothing is written."""
    if isinstance(source, Mapping):
        return _check(_from_arrays(source, target), label(source))
    if not isinstance(source, str) or not source.strip():
        raise InvalidInput(f"no data source given; {SOURCE_HELP}")
    source = source.strip()
    kind, sep, rest = source.partition(":")
    if sep and kind == "vars":
        raw = _from_vars(rest, target, user_ns)
    elif sep and kind == "sklearn":
        raw = _from_sklearn(rest)
    elif sep and kind == "text":
        return _from_text(rest, block or DEFAULT_BLOCK)
    else:
        raw = _from_path(source, target)
    return _check(raw, source)


# -- kernel variables and dicts of arrays -------------------------------------------------------


def _from_vars(spec: str, target: str | None, user_ns: Mapping[str, Any] | None) -> Raw:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names or len(names) > 2:
        raise InvalidInput(f"vars: takes one or two kernel variable names, e.g. vars:X,y (got {spec!r})")
    if user_ns is None:
        raise InvalidInput(
            f"vars:{spec} reads kernel variables, which only %aios sees; in Python pass user_ns=globals() "
            "or the arrays themselves: aios.dataset(NAME, {'x': X, 'y': y})"
        )
    missing = [n for n in names if n not in user_ns]
    if missing:
        raise InvalidInput(
            f"variable {missing[0]!r} is not defined in the kernel; define it first, then run this again"
        )
    values = [user_ns[n] for n in names]
    if len(values) == 2:
        x, y = values
        feature_names = list(map(str, x.columns)) if _is_frame(x) else None
        info = {"feature_names": feature_names, "target_name": names[1]}
        return Raw(_numeric(x, names[0]), _target_array(y, names[1], info), info=info)
    frame = values[0]
    if not _is_frame(frame):
        raise InvalidInput(
            f"vars:{names[0]} needs targets too: use vars:{names[0]},y, or a DataFrame with --target COL"
        )
    return _split_frame(frame, target, f"vars:{names[0]}")


def _from_arrays(arrays: Mapping[str, Any], target: str | None) -> Raw:
    """``{"x": X, "y": y}`` (or features/targets, ...): the Python way to give arrays without a namespace."""
    keys = [str(k) for k in arrays]
    xkey = next((k for k in X_KEYS if k in keys), None)
    ykey = next((k for k in ([target] if target else Y_KEYS) if k in keys), None)
    if xkey is None or ykey is None:
        raise InvalidInput(f"a dict source needs arrays named x and y, got keys {keys}; e.g. {{'x': X, 'y': y}}")
    info = {"target_name": ykey}
    return Raw(_numeric(arrays[xkey], xkey), _target_array(arrays[ykey], ykey, info), info=info)


# -- scikit-learn's bundled data -----------------------------------------------------------------


def _from_sklearn(name: str) -> Raw:
    name = name.strip().removeprefix("load_")
    if name not in BUNDLED_SKLEARN:
        hint = " (it needs a download: fetch it yourself and pass the arrays)" if name.startswith("fetch_") else ""
        raise InvalidInput(f"unknown sklearn data set {name!r}{hint}; bundled ones: {', '.join(BUNDLED_SKLEARN)}")
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, f"load_{name}")()
    x = np.asarray(bunch.images if name == "digits" else bunch.data)  # digits keep their 8x8 image shape
    y = np.asarray(bunch.target)
    names = _strings(bunch.get("target_names"))
    info: dict[str, Any] = {"feature_names": _strings(bunch.get("feature_names")) if x.ndim == 2 else None}
    if y.ndim == 1 and y.dtype.kind in "iu" and names:
        info["classes"] = names
    elif y.ndim == 2 and names:  # several targets (linnerud): regression on a vector
        info["target_names"] = names
    return Raw(x, y, info=info)


def _strings(values: Any) -> list[str] | None:
    """A bunch's names (a list or a numpy array, or missing) as a list of str, or None."""
    if values is None:
        return None
    out = [str(v) for v in np.asarray(values).ravel()]
    return out or None


# -- files, zarr stores and fsspec URLs ----------------------------------------------------------


def _from_path(source: str, target: str | None) -> Raw:
    remote_source = remote.is_url(source)
    path = source.split("::")[-1]
    suffix = os.path.splitext(path.rstrip("/"))[1].lower()
    if suffix in (".npz", ".npy", ".csv"):
        data = remote.read_bytes(source) if remote_source else _read_file(source)
        if suffix == ".npz":
            return _from_npz(data, source, target)
        if suffix == ".npy":
            return _from_npy(data, source, target)
        return _from_csv(data, source, target)
    if ":" in source.split("/")[0] and not os.path.exists(source):
        raise InvalidInput(f"unknown source kind {source.split(':')[0]!r}; {SOURCE_HELP}")
    if not os.path.exists(source):
        raise InvalidInput(f"file {source!r} not found; check the path ({SOURCE_HELP})")
    raise InvalidInput(f"cannot read {source!r}: {SOURCE_HELP}")


def _read_file(source: str) -> bytes:
    if not os.path.isfile(source):
        raise InvalidInput(f"file {source!r} not found; check the path")
    with open(source, "rb") as f:
        return f.read()


def _from_npz(data: bytes, source: str, target: str | None) -> Raw:
    try:
        arrays = dict(np.load(io.BytesIO(data), allow_pickle=False))
    except Exception as exc:
        raise InvalidInput(f"{source!r} is not a readable .npz file ({exc}); save it with numpy.savez") from None
    ykeys = [target] if target else Y_KEYS
    xkey = next((k for k in X_KEYS if k in arrays), None)
    ykey = next((k for k in ykeys if k in arrays), None)
    if xkey is None or ykey is None:
        raise InvalidInput(
            f"{source!r} holds {sorted(arrays)}; name the arrays x and y (numpy.savez(path, x=..., y=...))"
        )
    info = {"target_name": ykey}
    return Raw(_numeric(arrays[xkey], xkey), _target_array(arrays[ykey], ykey, info), info=info)


def _from_npy(data: bytes, source: str, target: str | None) -> Raw:
    try:
        table = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:
        raise InvalidInput(f"{source!r} is not a readable .npy file ({exc}); save it with numpy.save") from None
    if table.ndim != 2 or table.shape[1] < 2:
        raise InvalidInput(
            f"{source!r} has shape {table.shape}; a .npy source is a 2-D table whose target is "
            "a column (--target INDEX, default the last); use .npz with x and y for other shapes"
        )
    try:
        col = int(target) if target is not None else table.shape[1] - 1
        col = range(table.shape[1])[col]
    except (ValueError, IndexError):
        raise InvalidInput(
            f"--target for a .npy table is a column index in 0..{table.shape[1] - 1}, got {target!r}"
        ) from None
    x = np.delete(table, col, axis=1)
    info = {"target_name": f"column {col}"}
    y = table[:, col]
    if (
        y.dtype.kind == "f"
        and np.isfinite(y).all()
        and np.array_equal(y, np.round(y))
        and y.min() >= 0
        and len(np.unique(y)) <= 1000
    ):  # one dtype per table: whole-number targets are class labels
        y = y.astype(np.int64)
    return Raw(_numeric(x, source), _target_array(y, f"column {col}", info), info=info)


def _from_csv(data: bytes, source: str, target: str | None) -> Raw:
    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(data))
    except pd.errors.EmptyDataError:
        raise InvalidInput(f"{source!r} is empty; give a CSV with a header row and at least one data row") from None
    except Exception as exc:
        raise InvalidInput(f"cannot parse {source!r} as CSV: {exc}") from None
    return _split_frame(frame, target, source)


ZARR_METADATA = (".zgroup", ".zmetadata", "zarr.json")
ZARR_ARRAY_METADATA = (".zarray", "zarr.json")


def refuse_unsafe_zarr(source: str) -> None:
    """Refuse a pickle codec from the raw metadata, before zarr parses anything: unpickling a chunk runs
    whatever code the file's author put there."""
    import fsspec

    try:
        store = remote.mapper(source) if remote.is_url(source) else fsspec.get_mapper(source)
        keys = [*ZARR_METADATA, *(f"{a}/{m}" for a in (*X_KEYS, *Y_KEYS) for m in ZARR_ARRAY_METADATA)]
        blobs = store.getitems(keys, on_error="omit").values()  # one concurrent batch on an object store
    except Exception:  # unreadable: zarr says why below
        return
    for blob in filter(None, blobs):
        try:
            meta = json.loads(blob)
        except ValueError:
            continue
        if _unsafe(meta):
            raise InvalidInput(
                f"zarr store {source!r} uses the pickle codec (an object array), which aios never loads: "
                "unpickling runs code; save x and y as numeric arrays"
            )


def _unsafe(meta: Any) -> bool:
    """True if a codec anywhere in this metadata JSON is pickle (object arrays of zarr v2 may name one)."""
    if isinstance(meta, dict):
        for key, value in meta.items():
            if key in ("id", "name", "object_codec_id") and isinstance(value, str) and "pickle" in value.lower():
                return True
            if _unsafe(value):
                return True
    elif isinstance(meta, list):
        return any(_unsafe(v) for v in meta)
    return False


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:120]}" if text else type(exc).__name__


# -- text for language models --------------------------------------------------------------------


def _from_text(pattern: str, block: int) -> Raw:
    if not isinstance(block, int) or block < 1:
        raise InvalidInput(f"block must be a positive integer, got {block!r}")
    if remote.is_url(pattern):
        files = remote.glob(pattern)
    else:
        files = sorted(p for p in globlib.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
    if not files:
        raise InvalidInput(f"no files match text:{pattern}; check the glob (e.g. text:notes/*.txt)")
    chunks = []
    for path in files:
        if isinstance(path, remote.RemoteFile):
            chunks.append(path.read_bytes())
            continue
        with open(path, "rb") as f:
            chunks.append(f.read())
    tokens = np.frombuffer(b"".join(chunks), dtype=np.uint8).astype(np.int32)
    n = (len(tokens) - 1) // block
    if n < 1:
        raise InvalidInput(
            f"text:{pattern} holds {len(tokens)} bytes; need at least block+1 = {block + 1} "
            "(add text or pass a smaller block)"
        )
    x = tokens[: n * block].reshape(n, block)
    y = tokens[1 : n * block + 1].reshape(n, block)
    return Raw(x, y, task="lm", info={"block": block, "files": len(files)})


# -- helpers -------------------------------------------------------------------------------------


def _is_frame(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and hasattr(value, "columns")


def _split_frame(frame: Any, target: str | None, source: str) -> Raw:
    columns = [str(c) for c in frame.columns]
    if len(frame) == 0:
        raise InvalidInput(f"{source} holds no rows; give at least one sample per split")
    if target is None:
        target = next((c for c in columns if c.lower() in TARGET_COLUMNS), columns[-1] if columns else None)
    if target not in columns:
        raise InvalidInput(f"--target {target!r} is not a column of {source}; columns: {', '.join(columns)}")
    if len(columns) < 2:
        raise InvalidInput(f"{source} has only the column {target!r}; it needs features besides the target")
    frame = frame.rename(columns=str)
    features = [c for c in columns if c != target]
    for col in features:
        if frame[col].dtype.kind not in "biuf":
            raise InvalidInput(f"column {col!r} of {source} is not numeric; encode it as numbers or drop it")
    info: dict[str, Any] = {"feature_names": features, "target_name": target}
    y = _target_array(frame[target], target, info)
    return Raw(frame[features].to_numpy(), y, info=info)


def _numeric(value: Any, what: str) -> np.ndarray:
    """Features as a numeric numpy array (numpy, pandas, jax, lists)."""
    if _is_frame(value):
        bad = [str(c) for c, dt in value.dtypes.items() if dt.kind not in "biuf"]
        if bad:
            raise InvalidInput(f"column {bad[0]!r} of {what} is not numeric; encode it as numbers or drop it")
        value = value.to_numpy()
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise InvalidInput(f"{what} cannot become an array ({exc}); give numpy, pandas, jax or nested lists") from None
    if arr.dtype.kind not in "biuf":
        raise InvalidInput(f"{what} is not numeric (dtype {arr.dtype}); encode it as numbers first")
    return arr


def _target_array(value: Any, what: str, info: dict) -> np.ndarray:
    """Targets as numbers; text labels become class indices and their names go in ``info['classes']``."""
    arr = np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value)
    if arr.dtype.kind in "OUS" and arr.ndim == 1:
        if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in arr):
            raise InvalidInput(f"target {what} has missing values; fill or drop those rows")
        classes, codes = np.unique(arr.astype(str), return_inverse=True)
        info["classes"] = [str(c) for c in classes]
        return codes.astype(np.int32)
    if arr.dtype.kind not in "biuf":
        raise InvalidInput(f"target {what} is not numeric (dtype {arr.dtype}); encode it as numbers first")
    return arr


def _check(raw: Raw, source: str) -> Raw:
    if raw.x.ndim == 0 or raw.y.ndim == 0:
        raise InvalidInput(f"{source} gave scalars; features and targets need one row per sample")
    if len(raw.x) == 0:
        raise InvalidInput(f"{source} holds no rows; give at least one sample per split")
    if len(raw.x) != len(raw.y):
        raise InvalidInput(
            f"{source}: features have {len(raw.x)} rows but targets have {len(raw.y)}; give one target per sample"
        )
    if raw.x.ndim == 1:
        raw.x = raw.x[:, None]
    if raw.x.dtype.kind == "f" and not np.isfinite(raw.x).all():
        raise InvalidInput(f"{source} has NaN or infinite features; fill or drop those rows")
    return raw
