"""Beyond one machine: aios on an existing Ray cluster (``aios.cluster``; ``%aios cluster ...``).

>>> aios.cluster.connect("10.0.0.5:6379", token_file="~/ray-token")   # checks it answers, then stores it
>>> aios.cluster.status().nodes                                        # CPUs, GPUs/TPUs, memory per node
>>> aios.cluster.disconnect()

Ray is an optional dependency: nothing here imports it until a cluster is used.
"""

from __future__ import annotations

from .api import ClusterStatus, Node, connect, devices, disconnect, nodes, status
from .capacity import GangShape, check_fits, fits_now
from .ray_support import require_ray

__all__ = [
    "ClusterStatus",
    "GangShape",
    "Node",
    "check_fits",
    "connect",
    "devices",
    "disconnect",
    "fits_now",
    "nodes",
    "require_ray",
    "status",
]
