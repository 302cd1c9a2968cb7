"""Helpers shared by the serving tests (this module holds no tests).

Every server here is a real ``python -m aios_lab.serve`` process on a free 127.0.0.1 port, serving
real registry versions of a tiny mlp; each test module stops the server it started.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

from aios_lab.procs import free_port


def publish_tiny(
    name: str = "tiny",
    seed: int = 0,
    alias: str | None = "production",
    width: int = 16,
    features: int = 4,
    classes: int = 3,
):
    """Publish a real registry version of a small mlp (features -> classes); returns the ModelVersion."""
    import jax

    from aios_lab import registry
    from aios_lab.train.models import build

    spec = {"kind": "builtin", "name": "mlp", "config": {"width": width, "depth": 1}}
    model = build(spec, "classification", classes, (features,))
    params = model.init(jax.random.PRNGKey(seed), np.zeros((1, features), np.float32))
    return registry.publish_params(
        name, spec, params, task="classification", input_shape=(features,), n_outputs=classes, alias=alias
    )


def move_alias(model: str, alias: str, version: int) -> None:
    """Point ``alias`` at ``version`` as a user would: ``production`` is protected and moves only by promote."""
    from aios_lab import registry

    registry.promote(model, alias, version=version)


@contextlib.contextmanager
def aios_home(path: Path):
    """AIOS_HOME set to ``path`` for the duration (for module-scoped fixtures)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIOS_HOME", str(path))
        yield path


class Server:
    """A started endpoint plus what tests need: URL, admin and infer tokens, its AIOS_HOME."""

    def __init__(self, ep, home: Path, admin: str, infer: str):
        self.ep, self.home, self.admin, self.infer = ep, home, admin, infer
        self.url = ep.url
        self.hostport = ep.url.removeprefix("http://")

    def headers(self, role: str = "infer") -> dict:
        return {"Authorization": f"Bearer {self.admin if role == 'admin' else self.infer}"}


@contextlib.contextmanager
def running_server(home: Path, **kwargs):
    """Start a detached server with ``home`` as AIOS_HOME (models must be published first); stop it after."""
    from aios_lab.serve import create_token, serve

    with aios_home(home):
        ep = serve(port=free_port(), **kwargs)
        try:
            admin = (home.resolve() / "serve" / "token").read_text().strip()
            yield Server(ep, home, admin, create_token("infer", label="tests"))
        finally:
            if not ep.stop(timeout=30):
                os.kill(ep.pid, 9)


def binary_body(header: dict, *chunks: bytes) -> tuple[bytes, dict]:
    """A V2 binary request: JSON header then the tensor bytes, and the header-length header."""
    import orjson

    h = orjson.dumps(header)
    return h + b"".join(chunks), {"Inference-Header-Content-Length": str(len(h))}


def split_binary(resp) -> tuple[dict, bytes]:
    import orjson

    n = int(resp.headers["inference-header-content-length"])
    return orjson.loads(resp.content[:n]), resp.content[n:]
