"""``with ray_session() as ray:``: this process as a Ray driver of the connected cluster, for a while.

Used by the process that owns a cluster job (the supervisor), never by the kernel. Ray reads its
auth settings from the environment when it connects, so they are set for the session and put back.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from ..errors import AiosError
from . import target as targetlib
from .api import driver_env
from .probe import AUTH_VARS, NAMESPACE
from .ray_support import require_ray


@contextlib.contextmanager
def ray_session(t: targetlib.Target | None = None, log_to_driver: bool = True) -> Iterator[Any]:
    """Connect to ``t`` (default: the connected cluster) as a driver; yields the ``ray`` module."""
    require_ray()
    t = t or targetlib.require()
    env = driver_env(t)
    saved = {k: os.environ.pop(k, None) for k in AUTH_VARS}
    os.environ.update(env)
    try:
        import ray

        if ray.is_initialized():
            raise AiosError("this process is a Ray driver already; a cluster job runs in its own supervisor")
        _reload_auth()
        try:
            ray.init(
                address=t.address,
                namespace=NAMESPACE,
                logging_level=logging.WARNING,
                log_to_driver=log_to_driver,
                configure_logging=False,
            )
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise AiosError(
                f"could not connect to the Ray cluster at {t.address}: {first} "
                "(`%aios cluster` says more; a refused auth token looks like this too)"
            ) from None
        try:
            yield ray
        finally:
            ray.shutdown()
    finally:
        for k in AUTH_VARS:
            os.environ.pop(k, None)
        os.environ.update({k: v for k, v in saved.items() if v is not None})


def _reload_auth() -> None:
    """Make Ray re-read RAY_AUTH_MODE and the token (it caches both when first imported)."""
    with contextlib.suppress(Exception):  # internal hooks; a fresh process needs neither
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
