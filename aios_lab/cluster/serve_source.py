"""What a Ray Serve replica serves, without a catalog: the registry as the driver saw it, sent as plain JSON.

The driver (the one process that reads the local catalog) sends every replica a *serve document*::

    {"models": {"digits": {"follow": None | "production" | 3,
                           "versions": {"1": {"path": ".../models/digits/v1", "manifest_sha256": "..."}},
                           "aliases": {"production": 1}}},
     "tokens": {"<sha256 of a token>": {"role": "infer", "expires": None}}}

A replica reads model files by those paths (a folder every node reaches) and verifies them against
the manifest whose sha256 the catalog recorded at publish, exactly as ``aios.registry.load`` does; it
checks bearer tokens against the hashes. Revoked and expired tokens are left out by the driver.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from ..errors import NotFound
from ..serve.repository import ModelSource


class DocumentSource(ModelSource):
    """A :class:`ModelSource` over a serve document; :meth:`update` swaps in a newer one."""

    def __init__(self, doc: dict[str, Any] | None = None):
        self.doc: dict[str, Any] = doc or {"models": {}, "tokens": {}}

    def update(self, doc: dict[str, Any]) -> None:
        self.doc = doc  # one assignment: readers see the old document or the new one

    def _model(self, name: str) -> dict[str, Any]:
        m = self.doc["models"].get(name)
        if m is None:
            raise NotFound(f"no model named {name!r} is served by this deployment")
        return m

    def names(self) -> list[str]:
        return sorted(self.doc["models"])

    def follows(self, name: str) -> int | str | None:
        """What the deployment serves for ``name`` by default (None: the production alias, else the newest)."""
        return self._model(name).get("follow")

    def aliases(self, name: str) -> dict[str, int]:
        return {a: int(v) for a, v in self._model(name)["aliases"].items()}

    def resolve(self, name: str, ref: int | str | None) -> int:
        m = self._model(name)
        have = sorted(int(v) for v in m["versions"])
        if not have:
            raise NotFound(f"model {name!r} has no versions")
        if ref is None or ref == "latest":
            return have[-1]
        if isinstance(ref, str) and ref.lstrip("v").isdecimal():
            ref = int(ref.lstrip("v"))
        if isinstance(ref, int):
            if ref not in have:
                raise NotFound(f"model {name!r} has no version {ref}; it has {', '.join(map(str, have))}")
            return ref
        if ref not in m["aliases"]:
            raise NotFound(f"model {name!r} has no alias {ref!r}")
        return int(m["aliases"][ref])

    def load(self, name: str, version: int) -> Any:
        entry = self._model(name)["versions"].get(str(version))
        if entry is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return load_by_path(name, int(version), entry["path"], entry["manifest_sha256"])

    def token_lookup(self, token: str) -> tuple:
        """(role or None, why it is refused, expiry, scope): what ``serve.auth`` answers, from the hashes sent."""
        row = self.doc.get("tokens", {}).get(hashlib.sha256(token.encode()).hexdigest())
        if row is None:
            return None, "invalid", None
        if row["expires"] is not None and row["expires"] <= time.time():
            return None, "expired", None
        scope = row.get("models")  # a token scoped to some models answers a fourth element: their names
        return (row["role"], "", row["expires"]) + ((frozenset(scope),) if scope is not None else ())


def load_by_path(name: str, version: int, path: str, manifest_sha256: str, *, device: Any = None) -> Any:
    """A registry version loaded from its folder, every file checked against the manifest first (no catalog)."""
    from ..registry.lm_artifact import is_lm
    from ..registry.load import LoadedModel, manifest, read_verified, verify
    from ..registry.versions import ModelVersion

    mv = ModelVersion(name, version, path, manifest_sha256, 0, {}, {}, {}, "", 0.0)
    listed = manifest(mv)
    definition = json.loads(read_verified(mv, "model.json", listed))
    if is_lm(definition):
        from ..registry.lm_load import load_lm_version

        return load_lm_version(mv, listed, definition, device=device)
    return LoadedModel(mv, verify(mv), device=device)
