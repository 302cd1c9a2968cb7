"""Turn a SOURCE string (vars:, sklearn:, .npz/.npy/.csv, zarr/fsspec, text:) into in-memory arrays."""

from __future__ import annotations

import glob as globlib
import io
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import AiosError

BUNDLED_SKLEARN = ("digits", "iris", "wine", "breast_cancer", "diabetes", "linnerud")
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


def read(source: str, *, target: str | None = None, user_ns: dict | None = None, block: int | None = None) -> Raw:
    """Read ``source`` into a :class:`Raw`; every mistake is a one-line AiosError and nothing is written."""
    if not isinstance(source, str) or not source.strip():
        raise AiosError(f"no data source given; {SOURCE_HELP}")
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


# -- kernel variables ---------------------------------------------------------------------------


def _from_vars(spec: str, target: str | None, user_ns: dict | None) -> Raw:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names or len(names) > 2:
        raise AiosError(f"vars: takes one or two kernel variable names, e.g. vars:X,y (got {spec!r})")
    ns = _namespace(user_ns)
    missing = [n for n in names if n not in ns]
    if missing:
        raise AiosError(f"variable {missing[0]!r} is not defined in the kernel; define it first, then run this again")
    values = [ns[n] for n in names]
    if len(values) == 2:
        x, y = values
        feature_names = list(map(str, x.columns)) if _is_frame(x) else None
        info = {"feature_names": feature_names, "target_name": names[1]}
        return Raw(_numeric(x, names[0]), _target_array(y, names[1], info), info=info)
    frame = values[0]
    if not _is_frame(frame):
        raise AiosError(f"vars:{names[0]} needs targets too: use vars:{names[0]},y, or a DataFrame with --target COL")
    return _split_frame(frame, target, f"vars:{names[0]}")


def _namespace(user_ns: dict | None) -> dict:
    """The kernel's variables: given; else the calling code's (a notebook cell's are the kernel's); else IPython's."""
    if user_ns is not None:
        return user_ns
    ns: dict = {}
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            ns.update(shell.user_ns)
    except ImportError:  # pragma: no cover - IPython is a dependency
        pass
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("aios_lab"):
        frame = frame.f_back
    if frame is not None:
        ns.update(frame.f_globals)
        ns.update(frame.f_locals)
    return ns


# -- scikit-learn's bundled data -----------------------------------------------------------------


def _from_sklearn(name: str) -> Raw:
    name = name.strip()
    if name not in BUNDLED_SKLEARN:
        raise AiosError(f"unknown sklearn data set {name!r}; bundled ones: {', '.join(BUNDLED_SKLEARN)}")
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, f"load_{name}")()
    x = np.asarray(bunch.images if name == "digits" else bunch.data)  # digits keep their 8x8 image shape
    info: dict[str, Any] = {"feature_names": list(map(str, bunch.get("feature_names", []) or [])) or None}
    names = bunch.get("target_names")
    y = np.asarray(bunch.target)
    if name != "linnerud" and names is not None and y.dtype.kind in "iu":
        info["classes"] = [str(c) for c in names]
    return Raw(x, y, info=info)


# -- files, zarr stores and fsspec URLs ----------------------------------------------------------


def _from_path(source: str, target: str | None) -> Raw:
    remote = "://" in source
    path = source.split("::")[-1]
    suffix = os.path.splitext(path.rstrip("/"))[1].lower()
    if suffix in (".npz", ".npy", ".csv"):
        data = _read_bytes(source, remote)
        if suffix == ".npz":
            return _from_npz(data, source, target)
        if suffix == ".npy":
            return _from_npy(data, source, target)
        return _from_csv(data, source, target)
    if suffix == ".zarr" or remote or os.path.isdir(source):
        return _from_zarr(source, remote)
    if ":" in source.split("/")[0] and not os.path.exists(source):
        raise AiosError(f"unknown source kind {source.split(':')[0]!r}; {SOURCE_HELP}")
    if not os.path.exists(source):
        raise AiosError(f"file {source!r} not found; check the path ({SOURCE_HELP})")
    raise AiosError(f"cannot read {source!r}: {SOURCE_HELP}")


def _read_bytes(source: str, remote: bool) -> bytes:
    if not remote:
        if not os.path.isfile(source):
            raise AiosError(f"file {source!r} not found; check the path")
        with open(source, "rb") as f:
            return f.read()
    import fsspec

    try:
        with fsspec.open(source, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise AiosError(f"{source!r} not found; check the URL") from None
    except (ImportError, ValueError) as exc:
        raise AiosError(f"cannot open {source!r}: {exc}") from None


def _from_npz(data: bytes, source: str, target: str | None) -> Raw:
    try:
        arrays = dict(np.load(io.BytesIO(data), allow_pickle=False))
    except Exception as exc:
        raise AiosError(f"{source!r} is not a readable .npz file ({exc}); save it with numpy.savez") from None
    ykeys = [target] if target else Y_KEYS
    xkey = next((k for k in X_KEYS if k in arrays), None)
    ykey = next((k for k in ykeys if k in arrays), None)
    if xkey is None or ykey is None:
        raise AiosError(f"{source!r} holds {sorted(arrays)}; name the arrays x and y (numpy.savez(path, x=..., y=...))")
    info = {"target_name": ykey}
    return Raw(_numeric(arrays[xkey], xkey), _target_array(arrays[ykey], ykey, info), info=info)


def _from_npy(data: bytes, source: str, target: str | None) -> Raw:
    try:
        table = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:
        raise AiosError(f"{source!r} is not a readable .npy file ({exc}); save it with numpy.save") from None
    if table.ndim != 2 or table.shape[1] < 2:
        raise AiosError(
            f"{source!r} has shape {table.shape}; a .npy source is a 2-D table whose target is "
            "a column (--target INDEX, default the last); use .npz with x and y for other shapes"
        )
    try:
        col = int(target) if target is not None else table.shape[1] - 1
        col = range(table.shape[1])[col]
    except (ValueError, IndexError):
        raise AiosError(
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
        raise AiosError(f"{source!r} is empty; give a CSV with a header row and at least one data row") from None
    except Exception as exc:
        raise AiosError(f"cannot parse {source!r} as CSV: {exc}") from None
    return _split_frame(frame, target, source)


def _from_zarr(source: str, remote: bool) -> Raw:
    import zarr

    if not remote and not os.path.exists(source):
        raise AiosError(f"zarr store {source!r} not found; check the path")
    try:
        group = zarr.open_group(source, mode="r")
    except Exception as exc:
        raise AiosError(
            f"cannot open {source!r} as a zarr group ({type(exc).__name__}); give a zarr group holding arrays x and y"
        ) from None
    keys = set(group.array_keys())
    xkey = next((k for k in X_KEYS if k in keys), None)
    ykey = next((k for k in Y_KEYS if k in keys), None)
    if xkey is None or ykey is None:
        raise AiosError(f"zarr group {source!r} holds arrays {sorted(keys)}; it needs arrays named x and y")
    info = {"target_name": ykey}
    return Raw(_numeric(group[xkey][...], xkey), _target_array(group[ykey][...], ykey, info), info=info)


# -- text for language models --------------------------------------------------------------------


def _from_text(pattern: str, block: int) -> Raw:
    if not isinstance(block, int) or block < 1:
        raise AiosError(f"block must be a positive integer, got {block!r}")
    files = sorted(p for p in globlib.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
    if not files:
        raise AiosError(f"no files match text:{pattern}; check the glob (e.g. text:notes/*.txt)")
    chunks = []
    for path in files:
        with open(path, "rb") as f:
            chunks.append(f.read())
    tokens = np.frombuffer(b"".join(chunks), dtype=np.uint8).astype(np.int32)
    n = (len(tokens) - 1) // block
    if n < 1:
        raise AiosError(
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
        raise AiosError(f"{source} holds no rows; give at least one sample per split")
    if target is None:
        target = next((c for c in columns if c.lower() in TARGET_COLUMNS), columns[-1] if columns else None)
    if target not in columns:
        raise AiosError(f"--target {target!r} is not a column of {source}; columns: {', '.join(columns)}")
    if len(columns) < 2:
        raise AiosError(f"{source} has only the column {target!r}; it needs features besides the target")
    frame = frame.rename(columns=str)
    features = [c for c in columns if c != target]
    for col in features:
        if frame[col].dtype.kind not in "biuf":
            raise AiosError(f"column {col!r} of {source} is not numeric; encode it as numbers or drop it")
    info: dict[str, Any] = {"feature_names": features, "target_name": target}
    y = _target_array(frame[target], target, info)
    return Raw(frame[features].to_numpy(), y, info=info)


def _numeric(value: Any, what: str) -> np.ndarray:
    """Features as a numeric numpy array (numpy, pandas, jax, lists)."""
    if _is_frame(value):
        bad = [str(c) for c, dt in value.dtypes.items() if dt.kind not in "biuf"]
        if bad:
            raise AiosError(f"column {bad[0]!r} of {what} is not numeric; encode it as numbers or drop it")
        value = value.to_numpy()
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise AiosError(f"{what} cannot become an array ({exc}); give numpy, pandas, jax or nested lists") from None
    if arr.dtype.kind not in "biuf":
        raise AiosError(f"{what} is not numeric (dtype {arr.dtype}); encode it as numbers first")
    return arr


def _target_array(value: Any, what: str, info: dict) -> np.ndarray:
    """Targets as numbers; text labels become class indices and their names go in ``info['classes']``."""
    arr = np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value)
    if arr.dtype.kind in "OUS" and arr.ndim == 1:
        if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in arr):
            raise AiosError(f"target {what} has missing values; fill or drop those rows")
        classes, codes = np.unique(arr.astype(str), return_inverse=True)
        info["classes"] = [str(c) for c in classes]
        return codes.astype(np.int32)
    if arr.dtype.kind not in "biuf":
        raise AiosError(f"target {what} is not numeric (dtype {arr.dtype}); encode it as numbers first")
    return arr


def _check(raw: Raw, source: str) -> Raw:
    if raw.x.ndim == 0 or raw.y.ndim == 0:
        raise AiosError(f"{source} gave scalars; features and targets need one row per sample")
    if len(raw.x) == 0:
        raise AiosError(f"{source} holds no rows; give at least one sample per split")
    if len(raw.x) != len(raw.y):
        raise AiosError(
            f"{source}: features have {len(raw.x)} rows but targets have {len(raw.y)}; give one target per sample"
        )
    if raw.x.ndim == 1:
        raw.x = raw.x[:, None]
    if raw.x.dtype.kind == "f" and not np.isfinite(raw.x).all():
        raise AiosError(f"{source} has NaN or infinite features; fill or drop those rows")
    return raw
