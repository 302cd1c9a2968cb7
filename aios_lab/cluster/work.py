"""What aios runs on each Ray node, for ``%aios cluster`` and the Devices panel.

A cluster job's supervisor records where each rank runs in the job's ``info`` (``ranks``: rank,
node_id, ip, host, pid); this reads those rows, nothing else.
"""

from __future__ import annotations

import json

from .. import config


def running_on_nodes() -> dict[str, list[str]]:
    """``{node_id: ["JOB rank R", ...]}`` for the cluster jobs running now (reads the catalog only)."""
    if not (config.home() / "catalog.sqlite").exists():
        return {}
    from ..catalog import catalog

    found = catalog().query(
        "SELECT name, info FROM jobs WHERE state = 'running' AND json_extract(config, '$.on') = 'ray' ORDER BY created"
    )
    out: dict[str, list[str]] = {}
    for r in found:
        for rank in (json.loads(r["info"]) if r["info"] else {}).get("ranks", []):
            out.setdefault(rank["node_id"], []).append(f"{r['name']} rank {rank['rank']}")
    return out
