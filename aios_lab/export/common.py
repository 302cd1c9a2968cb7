"""What both exports share: Kubernetes names, the image's Dockerfile, YAML documents, and writing DIR whole.

An export is written into a fresh folder next to DIR and renamed into place only when every file is in,
so a failed export leaves nothing behind; DIR must not exist yet, or be an empty folder.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..errors import Conflict, InvalidInput

K8S_NAME_MAX = 45  # KServe and JobSet add suffixes to a resource's name; 45 leaves room under 63
PYTHON_IMAGE = "python:3.11-slim"


def k8s_name(name: str, what: str = "name") -> str:
    """A DNS-1035 label from an aios name (``digits_v2.small`` -> ``digits-v2-small``), at most 45 characters."""
    out = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if out and not out[0].isalpha():
        out = "m-" + out
    out = out[:K8S_NAME_MAX].rstrip("-")
    if not out:
        raise InvalidInput(f"cannot make a Kubernetes {what} from {name!r}; give --name NAME")
    return out


def check_k8s_name(name: str, what: str = "--name") -> str:
    if not re.fullmatch(r"[a-z]([a-z0-9-]{0,43}[a-z0-9])?", name):
        raise InvalidInput(
            f"{what} {name!r} is not a Kubernetes name: lowercase letters, digits and '-', starting with a "
            f"letter, at most {K8S_NAME_MAX} characters"
        )
    return name


def requirement() -> str:
    """What the image's ``pip install`` asks for by default: this aios_lab's version."""
    return f"aios_lab=={__version__}"


def dockerfile(extra_pip: str, copy: list[tuple[str, str]], entrypoint: list[str], env: dict[str, str]) -> str:
    """A Dockerfile that installs aios_lab (``--build-arg AIOS_LAB=...`` picks another source) and copies files in."""
    lines = [
        f"FROM {PYTHON_IMAGE}",
        "# AIOS_LAB: any pip requirement for aios_lab: a version, a wheel in this folder, or a git URL",
        f'ARG AIOS_LAB="{requirement()}"',
        "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 JAX_PLATFORMS=cpu",
        f'RUN pip install --no-cache-dir "$AIOS_LAB"{(" " + extra_pip) if extra_pip else ""}',
        "RUN useradd --uid 10001 --create-home aios",
    ]
    lines += [f"ENV {k}={v}" for k, v in env.items()]
    lines += [f"COPY --chown=aios:aios {src} {dst}" for src, dst in copy]
    lines += ["USER 10001", "ENTRYPOINT [" + ", ".join(f'"{a}"' for a in entrypoint) + "]", ""]
    return "\n".join(lines)


def dump_all(docs: list[dict[str, Any]]) -> str:
    """Several Kubernetes documents as one YAML stream (keys in the order given)."""
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, width=120)


def labels(kind: str, name: str, **more: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "aios-lab", "aios-lab/kind": kind, **more}


@contextmanager
def staged_dir(directory: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty folder that becomes ``directory`` when the block ends without an error."""
    final = Path(directory).expanduser().absolute()
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise Conflict(f"{final} exists and is not an empty folder; give a new folder to export into")
    if not final.parent.is_dir():
        raise InvalidInput(f"{final.parent} does not exist; create it or export somewhere else")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        yield tmp
        tmp.chmod(0o755)
        if final.exists():
            final.rmdir()
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
