"""``params.safetensors`` written and read one tensor at a time, hashed on the way, never whole in memory.

The format is :mod:`aios_lab.compress.params_file`'s (standard safetensors whose header metadata
``aios`` holds the tree's layout), so ``params_file.load_tree`` reads what :class:`ParamsWriter`
writes. The header is written first from a plan (name, shape, dtype per tensor, in the order they
will arrive); each tensor's bytes follow as they come; the sha256 and size for the manifest are
computed while writing. :func:`read_params` reads tensors in file order while hashing, and only
returns once the digest matched the manifest.

>>> with open(path, "wb") as f:
...     w = ParamsWriter(f, [("embed", (512, 64), np.float32)], {"embed": "embed"})
...     w.add("embed", embed)
...     sha, nbytes = w.close()
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

import numpy as np

from ..compress import params_file
from ..errors import AiosError

READ_BLOCK = 16 << 20


def _raw(a: np.ndarray) -> np.ndarray:
    """The little-endian bytes of ``a`` as a flat uint8 view (bfloat16 included)."""
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.byteswap().view(a.dtype.newbyteorder("<"))
    return a.reshape(-1).view(np.uint8)


class ParamsWriter:
    """Stream tensors into ``f`` in the order of ``plan``; ``close()`` returns (sha256, bytes) of all written."""

    def __init__(
        self,
        f: BinaryIO,
        plan: Sequence[tuple[str, tuple[int, ...], Any]],
        tree: Any,
        extra: dict[str, str] | None = None,
    ):
        self.f, self.hash, self.nbytes = f, hashlib.sha256(), 0
        self.plan = [(name, tuple(int(s) for s in shape), np.dtype(dtype)) for name, shape, dtype in plan]
        layout = {"format": params_file.FORMAT, "tree": tree, "compressed": {}}
        header: dict[str, Any] = {
            "__metadata__": {"aios": json.dumps(layout, separators=(",", ":")), "format": "np", **(extra or {})}
        }
        offset = 0
        for name, shape, dtype in self.plan:
            size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            header[name] = {
                "dtype": params_file.dtype_code(dtype),
                "shape": list(shape),
                "data_offsets": [offset, offset + size],
            }
            offset += size
        head = json.dumps(header, separators=(",", ":")).encode()
        head += b" " * (-len(head) % 8)
        self._write(struct.pack("<Q", len(head)) + head)
        self._next = 0

    def _write(self, b: Any) -> None:
        self.f.write(b)
        self.hash.update(b)
        self.nbytes += len(b) if isinstance(b, bytes) else b.nbytes

    def add(self, name: str, array: np.ndarray) -> None:
        """Write the next planned tensor; anything else (name, shape, dtype) is an error."""
        if self._next >= len(self.plan):
            raise AiosError(f"parameter {name!r} arrived after every planned tensor was written")
        want, shape, dtype = self.plan[self._next]
        if (name, tuple(array.shape), np.dtype(array.dtype)) != (want, shape, dtype):
            raise AiosError(
                f"parameter {name!r} {array.dtype}{list(array.shape)} arrived where {want!r} "
                f"{dtype}{list(shape)} was planned"
            )
        self._write(_raw(array))
        self._next += 1

    def close(self) -> tuple[str, int]:
        """Flush and fsync; the sha256 and size of everything written."""
        if self._next != len(self.plan):
            missing = ", ".join(n for n, *_ in self.plan[self._next : self._next + 3])
            raise AiosError(f"the parameter file is incomplete: {missing} ... were never written")
        self.f.flush()
        os.fsync(self.f.fileno())
        return self.hash.hexdigest(), self.nbytes


def read_params(
    path: str,
    sha256: str,
    nbytes: int,
    convert: Callable[[str, np.ndarray], Any] = lambda name, a: a,
    what: str = "parameters",
) -> Any:
    """The tree in ``path``, each plain tensor passed through ``convert(name, array)`` as it is read.

    The file is read once, in order, and hashed on the way; unless its size and sha256 match
    (``nbytes``, ``sha256`` from the manifest), a one-line AiosError is raised and nothing is returned.
    Compressed tensors (``P::q``, ...) come back as ``QTensor`` of numpy parts, not converted.
    """
    h = hashlib.sha256()
    bad = f"{what} failed verification:"
    try:
        with open(path, "rb") as f:
            head8 = f.read(8)
            if len(head8) < 8:
                raise AiosError(f"{bad} params.safetensors is truncated")
            (n,) = struct.unpack("<Q", head8)
            if n > params_file.MAX_HEADER or 8 + n > nbytes:
                raise AiosError(f"{bad} params.safetensors has a malformed header")
            head = f.read(n)
            h.update(head8)
            h.update(head)
            try:
                header = json.loads(head)
                meta = header.pop("__metadata__", {}) or {}
                layout = json.loads(meta["aios"])
                entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
            except (ValueError, KeyError, TypeError):
                raise AiosError(f"{bad} params.safetensors has a malformed header") from None
            if layout.get("format") != params_file.FORMAT:
                got = layout.get("format")
                raise AiosError(f"{what} are in format {got!r}; this aios_lab reads {params_file.FORMAT}")
            qparts = {f"{p}::{k}" for p in layout.get("compressed", {}) for k in ("q", "scale", "mask")}
            tensors: dict[str, Any] = {}
            end = 0
            for name, t in entries:
                try:
                    dtype = params_file.DTYPES[t["dtype"]]
                    shape = tuple(int(s) for s in t["shape"])
                    lo, hi = (int(x) for x in t["data_offsets"])
                except (KeyError, TypeError, ValueError):
                    raise AiosError(f"{bad} params.safetensors has a malformed entry {name!r}") from None
                if lo != end or hi - lo != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
                    raise AiosError(f"{bad} params.safetensors has inconsistent offsets at {name!r}")
                buf = np.empty(hi - lo, np.uint8)
                if f.readinto(memoryview(buf)) != hi - lo:
                    raise AiosError(f"{bad} params.safetensors is truncated")
                h.update(buf)
                array = buf.view(dtype).reshape(shape)
                tensors[name] = array if name in qparts else convert(name, array)
                del buf, array
                end = hi
            rest = f.read(READ_BLOCK)
            while rest:
                h.update(rest)
                end += len(rest)
                rest = f.read(READ_BLOCK)
    except OSError as exc:
        raise AiosError(f"{bad} cannot read params.safetensors ({exc.strerror or exc})") from None
    if 8 + n + end != nbytes:
        raise AiosError(f"{bad} params.safetensors is {8 + n + end} bytes, the manifest says {nbytes}")
    if h.hexdigest() != sha256:
        raise AiosError(f"{bad} params.safetensors has been modified (sha256 mismatch)")
    return params_file.tensors_to_tree(tensors, layout)


__all__ = ["ParamsWriter", "read_params"]
