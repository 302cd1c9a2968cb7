"""Build the Grafana dashboards with grafana-foundation-sdk; ``python -m aios_lab.grafana.generate`` writes them.

The JSON files beside this module are its output, committed so that the wheel carries them and a user needs
no SDK to import them; a test checks they equal what this module builds. Every query reads a Prometheus
data source chosen on import (the ``datasource`` variable).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from .serving import serving
from .training import training

HERE = Path(__file__).parent
DASHBOARDS: dict[str, Callable[[], Dashboard]] = {"aios-training": training, "aios-serving": serving}


def render(name: str) -> str:
    """The JSON text of dashboard ``name`` as it is committed (sorted keys, two-space indent, final newline)."""
    model = DASHBOARDS[name]().build()
    for number, panel in enumerate(model.panels or [], start=1):  # ids unique in the dashboard (panel links)
        panel.id_val = number
    return json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write every dashboard beside this module; ``--check`` only says which differ (exit 1 if any)."""
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    stale = []
    for name in DASHBOARDS:
        path = HERE / f"{name}.json"
        text = render(name)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.name)
        if not check:
            path.write_text(text)
    verb = "differ from the generator" if check else "written"
    print(f"{', '.join(stale)}: {verb}" if stale else "dashboards are up to date")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
