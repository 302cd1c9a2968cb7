"""Read a Hugging Face checkpoint's safetensors, one tensor at a time, after checking every file is whole.

``model.safetensors`` or a sharded ``model.safetensors.index.json``: every shard the index names must
exist, its header must parse, its size must match the header's data offsets, it must hold the tensors
the index assigns to it, and the headers must account for the index's ``total_size``. Anything else is a
one-line AiosError before a single tensor is read. Pickled ``pytorch_model.bin`` files are never read.

>>> with SafetensorsCheckpoint(path) as ckpt:
...     w = ckpt.get("model.embed_tokens.weight")       # numpy, read on demand
"""

from __future__ import annotations

import json
import os
import struct
from contextlib import ExitStack
from typing import Any

import numpy as np

from ..errors import AiosError

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
}


def read_header(path: str) -> dict[str, dict]:
    """The tensor table of one safetensors file (``{name: {dtype, shape, data_offsets}}``), checked against its size."""
    name = os.path.basename(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise AiosError(f"safetensors file {name} is truncated ({size} bytes): re-download it")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 100_000_000:
                raise AiosError(
                    f"safetensors file {name} is truncated or corrupt (header of {n} bytes in a "
                    f"{size}-byte file): re-download it"
                )
            header = json.loads(f.read(n))
    except OSError as exc:
        raise AiosError(f"cannot read {name}: {exc.strerror or exc}") from None
    except ValueError:
        raise AiosError(f"safetensors file {name} has a corrupt header: re-download it") from None
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end = 0
    for key, t in tensors.items():
        try:
            begin, stop = (int(x) for x in t["data_offsets"])
            want = int(np.prod(t["shape"], dtype=np.int64)) * DTYPE_BYTES.get(t["dtype"], 0)
        except (KeyError, TypeError, ValueError):
            raise AiosError(f"safetensors file {name} has a malformed entry for {key!r}: re-download it") from None
        if DTYPE_BYTES.get(t["dtype"]) and stop - begin != want:
            raise AiosError(
                f"safetensors file {name}: tensor {key!r} spans {stop - begin} bytes, its shape needs {want}"
            )
        end = max(end, stop)
    if size != 8 + n + end:
        raise AiosError(
            f"safetensors file {name} is truncated: {size} bytes on disk, its header says {8 + n + end}; re-download it"
        )
    return tensors


class SafetensorsCheckpoint:
    """The safetensors of a checkpoint directory: names, shapes and on-demand reads (numpy), all files checked."""

    def __init__(self, path: str):
        self.path = path
        # shard file names; tensor name -> shard file name (from the index); the index's total_size
        self.files, self.where, total = _locate(path)
        self.tensors: dict[str, dict] = {}
        for file in self.files:
            header = read_header(os.path.join(path, file))
            for key in [k for k, f in self.where.items() if f == file and k not in header]:
                raise AiosError(
                    f"{INDEX} says {file} holds {key!r}, but it does not: the shard is stale or "
                    "from another revision; re-download the checkpoint"
                )
            for key, t in header.items():
                self.tensors.setdefault(key, t)
                self.where.setdefault(key, file)
        self.nbytes = sum(
            int(np.prod(t["shape"], dtype=np.int64)) * DTYPE_BYTES.get(t["dtype"], 0) for t in self.tensors.values()
        )
        if total is not None and self.nbytes < int(total):  # more is fine: some indexes under-count
            raise AiosError(
                f"{INDEX} says the tensors take {total} bytes but the shards hold {self.nbytes}: "
                "a shard is missing, truncated or from another revision"
            )
        self._stack = ExitStack()
        self._handles: dict[str, Any] = {}

    def names(self) -> list[str]:
        return list(self.tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.tensors[name]["shape"])

    def dtype(self, name: str) -> str:
        """The stored dtype as safetensors spells it (``BF16``, ``F32``, ...)."""
        return self.tensors[name]["dtype"]

    def get(self, name: str) -> np.ndarray:
        """Read one tensor (numpy; bf16 comes back as ``ml_dtypes.bfloat16``)."""
        from safetensors import safe_open

        file = self.where[name]
        if file not in self._handles:
            self._handles[file] = self._stack.enter_context(safe_open(os.path.join(self.path, file), "numpy"))
        return self._handles[file].get_tensor(name)

    def paths(self) -> list[str]:
        """The files that hold the weights (and the index, when sharded), for hashing into lineage."""
        extra = [INDEX] if os.path.isfile(os.path.join(self.path, INDEX)) else []
        return [os.path.join(self.path, f) for f in extra + list(self.files)]

    def close(self) -> None:
        self._stack.close()
        self._handles.clear()

    def __enter__(self) -> SafetensorsCheckpoint:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _locate(path: str) -> tuple[list[str], dict[str, str], int | None]:
    """The shard files of ``path`` and the index's tensor -> file map (empty for one file); checks they exist."""
    index = os.path.join(path, INDEX)
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                data = json.load(f)
            where = {str(k): str(v) for k, v in data["weight_map"].items()}
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise AiosError(f"{INDEX} in {path} is unreadable ({type(exc).__name__}); re-download it") from None
        files = sorted(set(where.values()))
        for file in files:
            if os.path.basename(file) != file or file.startswith("."):
                raise AiosError(f"{INDEX} names a shard outside the checkpoint directory: {file!r}")
            if not os.path.isfile(os.path.join(path, file)):
                raise AiosError(
                    f"shard {file} listed in {INDEX} is missing from {path}: download it "
                    f"(the index lists {len(files)} shards)"
                )
        return files, where, (data.get("metadata") or {}).get("total_size")
    if os.path.isfile(os.path.join(path, SINGLE)):
        return [SINGLE], {}, None
    other = [f for f in os.listdir(path) if f.endswith((".bin", ".pt", ".pth", ".ckpt"))] if os.path.isdir(path) else []
    hint = " (pickled PyTorch weights are never loaded: convert them to safetensors)" if other else ""
    raise AiosError(f"no {SINGLE} or {INDEX} in {path}{hint}")


__all__ = ["SafetensorsCheckpoint", "read_header", "SINGLE", "INDEX"]
