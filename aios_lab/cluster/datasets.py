"""A dataset version opened by its path or URI alone, without the catalog (for processes on other hosts).

A version's zarr group carries everything the catalog row holds (name, hash, source, seed, splits,
schema) in its ``aios`` attribute, so a Ray rank reads the same ``Dataset`` the local catalog would
give, from a shared filesystem path or an fsspec URL, and checks it is the version the job asked for.
"""

from __future__ import annotations

import re
from typing import Any

from ..data.dataset import Dataset
from ..data.zarr_store import ATTR
from ..errors import AiosError


def open_version(path: str, expect_hash: str | None = None, where: str = "this host") -> Dataset:
    """The dataset version stored at ``path``; a one-line error if it is missing, not one, or another version."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        attrs: dict[str, Any] | None = group.attrs.get(ATTR)
    except Exception as exc:  # missing folder, unreachable bucket, not zarr
        raise AiosError(
            f"{where} cannot read the dataset at {path} ({type(exc).__name__}); "
            "a gang's datasets must be on a path or URI every host reaches"
        ) from None
    if not attrs or "schema" not in attrs:
        raise AiosError(f"{path} is not an aios dataset version (no {ATTR!r} attributes)")
    if expect_hash is not None and attrs.get("hash") != expect_hash:
        raise AiosError(
            f"{where} sees another dataset at {path} (hash {str(attrs.get('hash'))[:12]}, expected "
            f"{expect_hash[:12]}); give a path every host shares"
        )
    match = re.search(r"v(\d+)/?$", str(path))
    return Dataset(
        name=attrs["name"],
        version=int(match.group(1)) if match else 0,
        hash=attrs["hash"],
        path=str(path),
        source=attrs.get("source", ""),
        seed=int(attrs.get("seed", 0)),
        splits={k: int(v) for k, v in attrs["splits"].items()},
        schema=attrs["schema"],
        nbytes=0,
        created=0.0,
    )
