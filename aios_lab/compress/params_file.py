"""Parameter trees (compressed or not) in one safetensors file; no pickle anywhere.

The file is standard safetensors (8-byte little-endian header length, a JSON header, then the raw
little-endian bytes), written and read here with numpy so bfloat16 works too; the ``safetensors``
package reads it unchanged. The header's ``__metadata__["aios"]`` holds the tree's skeleton (nested
dicts/lists whose leaves name tensors) and, per compressed tensor, its shape, dtype, kind and group.
A compressed tensor ``P`` is stored as ``P::q``, ``P::scale`` and ``P::mask``.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from ..errors import AiosError
from .quant import QTensor, is_q

FORMAT = "aios-params/1"
DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U64": np.dtype(np.uint64),
    "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(bool),
}
CODES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024


def dtype_code(dtype: Any) -> str:
    try:
        return CODES[np.dtype(dtype)]
    except KeyError:
        raise AiosError(f"cannot store arrays of dtype {np.dtype(dtype)} in safetensors") from None


def encode(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """Tensors (name -> array) as safetensors bytes, in name order."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        if a.dtype.byteorder == ">":
            a = a.byteswap().view(a.dtype.newbyteorder("<"))
        raw = a.tobytes()
        header[name] = {
            "dtype": dtype_code(a.dtype),
            "shape": list(a.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


def decode(buf: bytes | memoryview, what: str = "parameters") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """safetensors bytes -> (name -> read-only array, metadata); a clear AiosError if malformed."""
    buf = memoryview(buf)
    try:
        if len(buf) < 8:
            raise ValueError("shorter than its header")
        (n,) = struct.unpack("<Q", buf[:8])
        if n > MAX_HEADER or 8 + n > len(buf):
            raise ValueError("header length past the end of the file")
        header = json.loads(bytes(buf[8 : 8 + n]).decode())
        meta = header.pop("__metadata__", {}) or {}
        data = buf[8 + n :]
        out, end = {}, 0
        for name, h in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            dt = DTYPES[h["dtype"]]
            lo, hi = h["data_offsets"]
            shape = tuple(int(s) for s in h["shape"])
            if lo != end or hi - lo != dt.itemsize * int(np.prod(shape, dtype=np.int64)) or hi > len(data):
                raise ValueError(f"tensor {name!r} has inconsistent offsets")
            out[name] = np.frombuffer(data[lo:hi], dtype=dt).reshape(shape)
            end = hi
        if end != len(data):
            raise ValueError("trailing bytes after the last tensor")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, struct.error) as exc:
        raise AiosError(f"{what} are not a valid safetensors file: {exc}") from None
    return out, meta


def tree_to_tensors(tree: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A (possibly compressed) pytree -> flat tensors and the layout that rebuilds it."""
    tensors: dict[str, np.ndarray] = {}
    qmeta: dict[str, Any] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            return {str(k): walk(v, f"{path}/{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [walk(v, f"{path}/{i}" if path else str(i)) for i, v in enumerate(node)]
        if is_q(node):
            for part, arr in node.arrays.items():
                tensors[f"{path}::{part}"] = np.asarray(arr)
            qmeta[path] = node.meta()
        else:
            tensors[path] = np.asarray(node)
        return path

    if hasattr(tree, "items") and not isinstance(tree, dict):  # FrozenDict and friends
        tree = dict(tree)
    skeleton = walk(tree, "")
    return tensors, {"format": FORMAT, "tree": skeleton, "compressed": qmeta}


def tensors_to_tree(tensors: dict[str, np.ndarray], layout: dict[str, Any]) -> Any:
    """Inverse of :func:`tree_to_tensors`."""
    qmeta = layout.get("compressed", {})

    def build(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: build(v) for k, v in node.items()}
        if isinstance(node, list):
            return [build(v) for v in node]
        if node in qmeta:
            m = qmeta[node]
            return QTensor(
                tensors[f"{node}::q"],
                tensors.get(f"{node}::scale"),
                tensors.get(f"{node}::mask"),
                tuple(m["shape"]),
                m["dtype"],
                m["kind"],
                m["group"],
                m.get("stack", 0),
                m.get("axis", -1),
            )
        return tensors[node]

    try:
        return build(layout["tree"])
    except KeyError as exc:
        raise AiosError(f"parameter file lacks tensor {exc}; it does not match its layout") from None


def tree_to_bytes(tree: Any, extra: dict[str, str] | None = None) -> bytes:
    """``tree`` as safetensors bytes, its layout (and ``extra``) in the header's metadata."""
    tensors, layout = tree_to_tensors(tree)
    return encode(tensors, {"aios": json.dumps(layout, separators=(",", ":")), **(extra or {})})


def save_tree(path: str | Path, tree: Any, extra: dict[str, str] | None = None) -> int:
    """Write ``tree`` to ``path`` (safetensors); returns the bytes written."""
    blob = tree_to_bytes(tree, extra)
    with open(path, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    return len(blob)


def tree_from_bytes(buf: bytes, what: str = "parameters") -> Any:
    tensors, meta = decode(buf, what)
    try:
        layout = json.loads(meta["aios"])
    except (KeyError, ValueError):
        raise AiosError(
            f"{what} carry no aios layout; write them with aios_lab.compress.params_file.save_tree"
        ) from None
    if layout.get("format") != FORMAT:
        raise AiosError(f"{what} are in format {layout.get('format')!r}; this aios_lab reads {FORMAT}")
    return tensors_to_tree(tensors, layout)


def load_tree(path: str | Path) -> Any:
    """Read a tree written by :func:`save_tree` (arrays are numpy, compressed parts stay compressed)."""
    return tree_from_bytes(Path(path).read_bytes(), f"parameters {path}")


__all__ = [
    "encode",
    "decode",
    "tree_to_bytes",
    "save_tree",
    "load_tree",
    "tree_from_bytes",
    "tree_to_tensors",
    "tensors_to_tree",
]
