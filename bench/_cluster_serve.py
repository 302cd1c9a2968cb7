"""The Serve section of ``bench/cluster.py``: requests/s of 2 Ray Serve replicas over 1 local ``aios serve``.

Both endpoints serve the same registry version (the 64-256-256-10 MLP of ``bench/serve.py``) from one
AIOS_HOME and run at the same time, inside the local two-node cluster's loopback-only namespace; ``wrk``
(32 connections, JSON infer requests with a token) drives them in interleaved rounds, alternating which
goes first, and the ratio is the median over rounds of the per-round ratios. On one machine both Ray
nodes share its cores with the proxy and the benchmark's own ``wrk``, so this measures what Serve's
extra hop (proxy -> replica) costs here, not what more hosts would add. For scale, the same ``wrk`` also
drives a no-op ASGI app deployed on the same Serve proxy with 2 replicas (the floor of any Serve app here).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

CONNECTIONS = 32
FLOOR_DRIVER = textwrap.dedent("""
    import logging, signal, sys, threading, ray
    from ray import serve
    BODY = b'{"model_name":"mlp","model_version":"1","outputs":[]}'
    class App:  # an ASGI app object (a bare function would be taken for an app builder)
        async def __call__(self, scope, receive, send):
            if scope["type"] == "lifespan":
                while True:
                    m = await receive()
                    await send({"type": m["type"] + ".complete"})
                    if m["type"] == "lifespan.shutdown":
                        return
            while (await receive()).get("more_body"):
                pass
            head = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            await send({"type": "http.response.body", "body": BODY})
    @serve.deployment(num_replicas=2, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0},
                      logging_config={"enable_access_log": False, "log_level": "WARNING"})
    @serve.ingress(App())
    class Floor:
        pass
    ray.init(address=sys.argv[1], namespace="aios-bench", logging_level=logging.WARNING, log_to_driver=False)
    try:
        serve.run(Floor.bind(), name="floor", route_prefix="/floor")
    except RuntimeError:
        print(serve.status().applications["floor"].deployments["Floor"].message, file=sys.stderr)
        raise
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    serve.delete("floor")
""")


def publish_bench_model(name: str = "mlp") -> bytes:
    """Publish the benchmark MLP; returns one JSON infer request body for it."""
    import jax
    import numpy as np
    import orjson

    from aios_lab import registry
    from aios_lab.train.models import build

    spec = {"kind": "builtin", "name": "mlp", "config": {"width": 256, "depth": 2}}
    params = build(spec, "classification", 10, (64,)).init(jax.random.PRNGKey(0), np.zeros((1, 64), np.float32))
    registry.publish_params(name, spec, params, task="classification", input_shape=(64,), n_outputs=10)
    x = np.random.default_rng(0).normal(size=(1, 64)).astype(np.float32)
    return orjson.dumps(
        {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": x.ravel().tolist()}]}
    )


def serve_section(cluster: Any, workdir: Path, seconds: float = 5.0, rounds: int = 3, replicas: int = 2) -> dict:
    """Run inside ``cluster.inside()`` with AIOS_HOME set and a cluster target saved; prints rounds and the ratio."""
    from serve import wrk  # bench/serve.py's wrk driver (the same Lua body, error checks, parsing)

    from aios_lab.procs import free_port
    from aios_lab.serve import default_token, serve, stop

    body = publish_bench_model()
    token = default_token()
    t0 = time.monotonic()
    local = serve(port=free_port(), models=["mlp"])
    t1 = time.monotonic()
    ray = serve(on="ray", replicas=replicas, port=free_port(), models=["mlp"])
    t2 = time.monotonic()
    print(f"local endpoint ready in {t1 - t0:.1f} s; {replicas} Serve replicas ready in {t2 - t1:.1f} s", flush=True)
    floor = _floor(cluster)
    targets = {
        "local aios serve": local.url + "/v2/models/mlp/infer",
        f"Ray Serve x{replicas}": ray.url + "/v2/models/mlp/infer",
        "no-op app on Serve x2": ray.url + "/floor",
    }
    results: list[dict[str, dict]] = []
    try:
        for n in range(rounds):
            order = list(targets) if n % 2 == 0 else list(targets)[::-1]
            got = {}
            for label in order:
                r = wrk(targets[label], body, token, CONNECTIONS, seconds, workdir)
                got[label] = r
                print(
                    f"round {n + 1}  {label:18s} c={CONNECTIONS} {r['rps']:8.0f} req/s  p50 {r['p50']:7.2f} ms  "
                    f"p99 {r['p99']:7.2f} ms",
                    flush=True,
                )
            results.append(got)
    finally:
        floor.send_signal(signal.SIGTERM)
        floor.wait(120)
        stop(all=True)
    a, b = f"Ray Serve x{replicas}", "local aios serve"
    ratio = statistics.median(r[a]["rps"] / r[b]["rps"] for r in results)
    med = {k: statistics.median(r[k]["rps"] for r in results) for k in targets}
    print(f"\n| endpoint | requests/s at c={CONNECTIONS} (median of {rounds} rounds) |\n|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.0f} |")
    floor_ratio = statistics.median(r["no-op app on Serve x2"]["rps"] / r[b]["rps"] for r in results)
    print(f"| ratio: {replicas} Serve replicas / 1 local aios serve (median of per-round ratios) | {ratio:.2f} |")
    print(f"| (info) no-op app on 2 Serve replicas / 1 local aios serve | {floor_ratio:.2f} |")
    return {"ratio": ratio, "floor_ratio": floor_ratio, "median_rps": med, "rounds": results}


def _floor(cluster: Any) -> subprocess.Popen:
    """A driver that deploys the no-op app at /floor on the same Serve proxy (stopped by SIGTERM)."""
    env = {**os.environ, **{k: v for k, v in cluster.env().items() if k.startswith("RAY_AUTH")}}
    proc = subprocess.Popen(
        [sys.executable, "-c", FLOOR_DRIVER, cluster.address], env=env, stdout=subprocess.PIPE, text=True
    )
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit("the no-op Serve app did not start")
    return proc
