"""What a gang asks of a Ray cluster, and whether the cluster can hold it (pure functions over nodes).

A gang is ``hosts`` bundles, one per node (STRICT_SPREAD), each ``{HOST_RESOURCE: 1, "CPU": c}`` plus
its accelerators. Where some nodes offer ``aios_host`` (``ray start --resources '{"aios_host": 1}'``)
only those take aios ranks, one rank per node at a time; on a cluster where none does, every node can.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import AiosError

HOST_RESOURCE = "aios_host"
KINDS = ("cpu", "gpu", "tpu")
_ACCEL = {"gpu": "GPU", "tpu": "TPU"}


@dataclass(frozen=True)
class GangShape:
    """``hosts`` ranks of ``devices_per_host`` devices of ``kind``, each reserving ``cpus_per_host`` CPUs."""

    hosts: int
    devices_per_host: int
    kind: str = "cpu"
    cpus_per_host: float = 1
    strategy: str = "STRICT_SPREAD"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise AiosError(f"device kind {self.kind!r}: use one of {', '.join(KINDS)}")
        if self.hosts < 1 or self.devices_per_host < 1:
            raise AiosError("--hosts and --devices-per-host must be at least 1")
        if self.strategy not in ("STRICT_SPREAD", "SPREAD", "PACK", "STRICT_PACK"):
            raise AiosError(f"placement strategy {self.strategy!r}: use STRICT_SPREAD, SPREAD, PACK or STRICT_PACK")

    def bundle(self, host_resource: bool) -> dict[str, float]:
        """One host's share of the placement group."""
        b: dict[str, float] = {"CPU": float(self.cpus_per_host)}
        if self.kind in _ACCEL:
            b[_ACCEL[self.kind]] = float(self.devices_per_host)
        if host_resource:
            b[HOST_RESOURCE] = 1.0
        return b

    def describe(self) -> str:
        return f"{self.hosts} host(s) x {self.devices_per_host} {self.kind.upper()} device(s)"


def uses_host_resource(nodes: Sequence[dict[str, Any]]) -> bool:
    """True if any live node offers the ``aios_host`` resource (then only those take ranks)."""
    return any(n["alive"] and n["resources"].get(HOST_RESOURCE) for n in nodes)


def _fits(resources: dict[str, float], bundle: dict[str, float]) -> bool:
    return all(resources.get(k, 0.0) >= v for k, v in bundle.items())


def usable(shape: GangShape, nodes: Sequence[dict[str, Any]], now: bool = False) -> list[dict[str, Any]]:
    """Nodes that could hold one bundle (``now``: with what is free at the moment, where Ray tells)."""
    bundle = shape.bundle(uses_host_resource(nodes))
    key = "available" if now else "resources"
    return [n for n in nodes if n["alive"] and n.get(key) is not None and _fits(n[key], bundle)]


def check_fits(shape: GangShape, nodes: Sequence[dict[str, Any]]) -> None:
    """A one-line error if the gang is bigger than the cluster can ever hold (refused at submit)."""
    ok = usable(shape, nodes)
    if len(ok) < (shape.hosts if shape.strategy == "STRICT_SPREAD" else 1):
        live = [n for n in nodes if n["alive"]]
        raise AiosError(
            f"a gang of {shape.describe()} cannot fit this Ray cluster: it has {len(live)} live node(s), "
            f"{len(ok)} of them able to hold one rank ({_sizes(live)}); ask for at most {len(ok)} host(s)"
        )


def fits_now(shape: GangShape, nodes: Sequence[dict[str, Any]]) -> bool:
    """True if the cluster's free resources hold the gang right now (the queue admits it then)."""
    return len(usable(shape, nodes, now=True)) >= shape.hosts


def _sizes(nodes: Sequence[dict[str, Any]]) -> str:
    parts = []
    for n in nodes:
        r = n["resources"]
        accel = "".join(f", {int(r[k])} {k}" for k in ("GPU", "TPU") if r.get(k))
        host = "" if not r.get(HOST_RESOURCE) else f", {HOST_RESOURCE}"
        parts.append(f"{n.get('host') or n['ip']}: {int(r.get('CPU', 0))} CPU{accel}{host}")
    return "; ".join(parts) or "no nodes"
