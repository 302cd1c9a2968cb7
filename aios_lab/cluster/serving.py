"""``aios.serve(on="ray", replicas=N)`` / ``%aios serve --on ray --replicas N``: the V2 server on the connected cluster.

>>> ep = aios.serve(on="ray", replicas=2)      # a detached driver deploys 2 Ray Serve replicas
>>> ep.url, ep.kind                            # 'http://HEAD:8500', 'ray-serve'
>>> aios.endpoints()                           # the deployment's row: replicas, nodes, traffic
>>> aios_lab.serve.stop(port=8500)             # the driver deletes the Serve application

The kernel never joins the cluster: it checks what it can here (a cluster is connected, the models
asked for exist, the port is free of another aios endpoint), then starts
``python -m aios_lab.cluster.serve_driver`` in its own session (it outlives the kernel) and waits for
the row it writes. Replicas read model files by their registry paths, so the registry's folder
(``AIOS_HOME/models``) must be on storage every node reaches, as a gang's datasets and checkpoints are.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

from .. import config
from ..errors import Conflict, InvalidInput
from ..serve.auth import default_token
from ..serve.control import LIVE_STATES, Endpoint, endpoints
from ..serve.settings import ServeSettings
from ..serve.tls import check_transport
from . import target as targetlib
from .api import driver_env
from .probe import AUTH_VARS
from .ray_support import require_ray
from .serve_driver import KIND, document, serve_url

MAX_REPLICAS = 1024


def serve_on_ray(
    settings: ServeSettings, *, replicas: int = 1, cpus_per_replica: float = 1.0, timeout: float = 600.0
) -> Endpoint:
    """Ensure ``replicas`` Ray Serve replicas of the V2 server run on the connected cluster; returns the endpoint."""
    require_ray()
    t = targetlib.require()
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= MAX_REPLICAS:
        raise InvalidInput(f"--replicas must be a whole number from 1 to {MAX_REPLICAS}, not {replicas!r}")
    if not 0 < cpus_per_replica <= 1024:
        raise InvalidInput(f"cpus per replica must be more than 0 and at most 1024, not {cpus_per_replica!r}")
    bind, url = serve_url(settings, t)
    # as for a local endpoint: HTTPS files that fit together, no plain HTTP off loopback without --insecure
    check_transport(dataclasses.replace(settings, host=bind))
    document(settings.models)  # a model, version or alias that does not exist: one line, nothing started
    for ep in endpoints():
        if ep.kind == KIND and ep.state in LIVE_STATES:
            if ep.url == url and ep.state == "running":
                return ep
            raise Conflict(
                f"a Ray Serve deployment of aios already runs at {ep.url} ({ep.state}); Serve has one HTTP "
                f"address per cluster: `%aios serve stop --port {ep.port}` first"
            )
        if ep.url == url and ep.state in LIVE_STATES:
            raise Conflict(f"{url} is served by a local endpoint (pid {ep.pid}); pick another --port")
    default_token()  # clients need a token; the driver sends its hash to the replicas
    log = config.area("serve") / f"ray-{settings.port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    env.update(driver_env(t), AIOS_HOME=str(config.home()))
    argv = [sys.executable, "-m", "aios_lab.cluster.serve_driver", "--replicas", str(replicas)]
    argv += ["--cpus-per-replica", str(cpus_per_replica), *settings.to_argv()]
    with config.open_private(log) as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    return _wait(proc, url, log, timeout)


def _wait(proc: subprocess.Popen, url: str, log, timeout: float) -> Endpoint:
    """The endpoint once its driver says every replica is ready; a one-line error with the log's end if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ep = next((e for e in endpoints() if e.url == url and e.pid == proc.pid), None)
        if ep is not None and ep.state == "running" and (ep.status or {}).get("ready"):
            return ep
        if proc.poll() is not None:
            why = ((ep.status or {}).get("error") if ep is not None else None) or _tail(log)
            raise InvalidInput(f"the Ray Serve deployment did not start: {why} (log: {log})")
        time.sleep(0.25)
    proc.terminate()
    raise Conflict(f"the Ray Serve deployment at {url} was not ready within {timeout:.0f} s; see {log}")


def _tail(log) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "its driver exited without a word"
