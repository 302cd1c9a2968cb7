"""Is a usable Ray installed here? Checked without importing Ray (the kernel stays light).

aios needs placement groups, actors with ``runtime_env`` and token authentication (Ray 2.52 added it);
an older or missing Ray is a one-line error that says which version to install.
"""

from __future__ import annotations

import importlib.metadata
import re

from ..errors import AiosError

MIN_RAY = (2, 52)  # token authentication (RAY_AUTH_MODE=token) first shipped in Ray 2.52.0
REQUIREMENT = "ray[default]>=2.52"


def parse(version: str) -> tuple[int, ...]:
    """``"2.60.0rc1"`` -> ``(2, 60, 0)``."""
    return tuple(int(p) for p in re.findall(r"\d+", version.split("rc")[0].split("+")[0])[:3])


def check_version(version: str | None) -> str:
    """``version`` if it is a Ray that aios can drive, else an AiosError saying what to install."""
    if version is None:
        raise AiosError(f"Ray is not installed here; `pip install '{REQUIREMENT}'` (the version the cluster runs)")
    if parse(version) < MIN_RAY:
        raise AiosError(
            f"Ray {version} lacks token authentication and the placement-group APIs aios needs; "
            f"install Ray {'.'.join(map(str, MIN_RAY))} or newer on every node and here (`pip install '{REQUIREMENT}'`)"
        )
    return version


def installed_version() -> str | None:
    """The installed Ray's version, or None."""
    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return None


def require_ray() -> str:
    """The installed Ray's version if aios can drive it (see ``check_version``)."""
    return check_version(installed_version())
