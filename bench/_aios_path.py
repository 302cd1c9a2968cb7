"""Make ``aios_lab.train`` importable from a bench script, even where IPython/zarr are not installed.

``aios_lab/__init__`` wires up the notebook magics (IPython); a bare accelerator host may lack it. The
training core needs none of that, so fall back to importing the package's modules without its __init__.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup() -> None:
    """Put the repository on sys.path and import ``aios_lab`` (or a bare namespace for it)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        importlib.import_module("aios_lab")
    except ImportError as exc:  # e.g. no IPython on the GPU host
        for name in [m for m in sys.modules if m == "aios_lab" or m.startswith("aios_lab.")]:
            del sys.modules[name]
        pkg = types.ModuleType("aios_lab")
        pkg.__path__ = [str(ROOT / "aios_lab")]
        sys.modules["aios_lab"] = pkg
        print(f"(aios_lab imported without its notebook layer: {exc})", file=sys.stderr)
