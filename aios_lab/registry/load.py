"""Loading a model version: verify every file against the manifest, then build a jitted forward.

Compressed parameters stay compressed on the device; they are dequantised inside the jitted forward.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..catalog import catalog
from ..errors import AiosError, InvalidInput
from .lm_artifact import is_lm
from .publish import FILES, FORMAT, sha256_bytes
from .versions import ModelVersion, get


def _bad(mv: ModelVersion) -> tuple[str, str]:
    return f"model {mv.ref} at {mv.path} failed verification:", "; republish it (the version is immutable) or delete it"


def manifest(mv: ModelVersion) -> dict[str, dict]:
    """The version's manifest entries (name -> {sha256, bytes}), after checking manifest.json against the
    catalog row and that the folder holds exactly the files it lists and the ones every version has."""
    path = Path(mv.path)
    bad, fix = _bad(mv)
    if not path.is_dir():
        raise AiosError(f"{bad} its directory is missing{fix}")
    try:
        raw = (path / "manifest.json").read_bytes()
    except OSError:
        raise AiosError(f"{bad} manifest.json is missing{fix}") from None
    if sha256_bytes(raw) != mv.manifest_sha256:
        raise AiosError(f"{bad} manifest.json does not match the sha256 recorded at publish{fix}")
    listed = json.loads(raw).get("files", {})
    present = {p.name for p in path.iterdir()} - {"manifest.json"}
    extra = sorted(present - set(listed))
    if extra:
        raise AiosError(f"{bad} unexpected file(s) {', '.join(extra)} not in the manifest{fix}")
    missing = [f for f in FILES if f not in listed]
    if missing:
        raise AiosError(f"{bad} the manifest lacks {', '.join(missing)}{fix}")
    return listed


def read_verified(mv: ModelVersion, name: str, listed: dict[str, dict]) -> bytes:
    """One file of the version, checked against its manifest entry (size, then sha256)."""
    bad, fix = _bad(mv)
    want = listed[name]
    try:
        b = (Path(mv.path) / name).read_bytes()
    except OSError:
        raise AiosError(f"{bad} {name} is missing{fix}") from None
    if len(b) != want["bytes"]:
        what = "truncated" if len(b) < want["bytes"] else "longer than published"
        raise AiosError(f"{bad} {name} is {what} ({len(b)} of {want['bytes']} bytes){fix}")
    if sha256_bytes(b) != want["sha256"]:
        raise AiosError(f"{bad} {name} has been modified (sha256 mismatch){fix}")
    return b


def verify(mv: ModelVersion) -> dict[str, bytes]:
    """Read and check every file of ``mv``; returns their verified bytes. Tampering raises a one-line AiosError."""
    listed = manifest(mv)
    return {name: read_verified(mv, name, listed) for name in sorted(listed)}


class LoadedModel:
    """A verified registry version, ready to predict: ``predict(x)`` (checked, numpy) and ``forward`` (raw).

    ``forward(x)`` is the jitted batch forward for a server: numpy in, numpy out, any batch size (padded to
    a power of two so only a few shapes compile). Compressed weights stay int8/int4/bf16 in ``params``.
    """

    def __init__(self, mv: ModelVersion, files: dict[str, bytes], device: Any = None):
        from ..compress import params_file
        from ..compress.qmodel import QForward
        from ..train.models import build

        self.record = mv
        self.name, self.version, self.path = mv.name, mv.version, Path(mv.path)
        self.definition = json.loads(files["model.json"])
        if self.definition.get("format") != FORMAT:
            raise AiosError(
                f"model {mv.ref} is in format {self.definition.get('format')!r}; this aios_lab reads {FORMAT}"
            )
        self.signature = json.loads(files["signature.json"])
        self.metrics = json.loads(files["metrics.json"])
        self.lineage = json.loads(files["lineage.json"])
        d = self.definition
        self.task, self.input_shape = d["task"], tuple(d["input_shape"])
        self.input_dtype = np.dtype(d.get("input_dtype", "float32"))
        self.model = build(d["spec"], d["task"], int(d["n_outputs"]), self.input_shape)
        params = params_file.tree_from_bytes(files["params.safetensors"], f"parameters of {mv.ref}")
        self.forward = QForward(self.model.apply, params, device=device)
        self.params = self.forward.params

    @property
    def metadata(self) -> dict[str, Any]:
        """Everything known about this version: definition, signature, metrics, lineage, hashes, aliases."""
        mv = self.record
        return {
            "name": self.name,
            "version": self.version,
            "path": str(self.path),
            "task": self.task,
            "spec": self.definition["spec"],
            "method": self.definition.get("method"),
            "input_shape": list(self.input_shape),
            "n_outputs": self.definition["n_outputs"],
            "signature": self.signature,
            "metrics": self.metrics,
            "lineage": self.lineage,
            "manifest_sha256": mv.manifest_sha256,
            "nbytes": mv.nbytes,
            "aliases": mv.aliases,
            "created": mv.created,
            "created_by": mv.created_by,
            "param_bytes": self.nbytes,
        }

    @property
    def nbytes(self) -> int:
        """Bytes the parameters occupy on the device (compressed tensors as stored)."""
        return self.forward.nbytes

    @property
    def compressed(self) -> bool:
        return self.forward.compressed

    def predict(self, x: Any) -> np.ndarray:
        """Outputs for a batch ``x`` shaped ``[batch, *input_shape]`` (a single sample is accepted too)."""
        x = np.asarray(x)
        single = x.shape == self.input_shape
        if single:
            x = x[None]
        if tuple(x.shape[1:]) != self.input_shape:
            raise InvalidInput(
                f"{self.name}:v{self.version} takes inputs shaped [batch, {', '.join(map(str, self.input_shape))}]"
                f", got {list(x.shape)}"
            )
        if x.dtype != self.input_dtype:
            if self.input_dtype.kind in "iu" and x.dtype.kind == "f" and not np.all(np.mod(x, 1) == 0):
                raise InvalidInput(
                    f"{self.name}:v{self.version} takes integer tokens ({self.input_dtype}); got fractions"
                )
            x = x.astype(self.input_dtype)
        out = self.forward(x)
        return out[0] if single else out

    __call__ = predict

    def __repr__(self) -> str:
        method = self.definition.get("method") or "fp32"
        return f"<LoadedModel {self.name}:v{self.version} {method} {self.task} input {list(self.input_shape)}>"


def load(
    model: str, version: int | str | None = None, *, device: Any = None, audit: bool = True, **lm_options: Any
) -> Any:
    """Verify and load ``model`` at ``version`` (a number, an alias such as production, or None for the newest).

    A language model comes back as a :class:`~aios_lab.registry.lm_load.LoadedLM` (``generate``,
    ``tokenizer``, ...; ``lm_options``: ``dtype``, ``stacked``); any other model as a :class:`LoadedModel`."""
    mv = get(model, version)
    listed = manifest(mv)
    definition = json.loads(read_verified(mv, "model.json", listed))
    if is_lm(definition):
        from .lm_load import load_lm_version

        loaded = load_lm_version(mv, listed, definition, device=device, **lm_options)
    else:
        if lm_options:
            raise InvalidInput(f"{', '.join(lm_options)} only apply to language models; {mv.ref} is not one")
        loaded = LoadedModel(mv, verify(mv), device=device)
    if audit:
        catalog().audit(
            "load",
            mv.ref,
            manifest_sha256=mv.manifest_sha256,
            requested=str(version) if version is not None else None,
            pid=os.getpid(),
        )
    return loaded


__all__ = ["load", "verify", "manifest", "read_verified", "LoadedModel"]
