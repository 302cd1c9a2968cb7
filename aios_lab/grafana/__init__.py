"""Grafana dashboards for aios, shipped in the wheel: import them in Grafana (Dashboards > New > Import).

``aios-training.json``: jobs, the queue and the devices (scrape ``/aios/api/metrics`` or ``aios metrics serve``).
``aios-serving.json``: the serving endpoint's ``/metrics``, language models included.
Both ask on import for a Prometheus data source. ``generate.py`` builds them (``training.py``, ``serving.py``)
with grafana-foundation-sdk, which only building them needs.

>>> from aios_lab import grafana
>>> grafana.path("aios-training")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import NotFound

HERE = Path(__file__).parent
NAMES = ("aios-training", "aios-serving")


def path(name: str) -> Path:
    """The JSON file of dashboard ``name``."""
    if name not in NAMES:
        raise NotFound(f"no dashboard {name!r}; there are {', '.join(NAMES)}")
    return HERE / f"{name}.json"


def load(name: str) -> dict[str, Any]:
    """Dashboard ``name`` as Grafana's JSON model."""
    return json.loads(path(name).read_text())


__all__ = ["NAMES", "load", "path"]
