"""Benchmark of the V2 endpoint against the HTTP floor and the bare forward pass, in one run.

    python bench/serve.py [--seconds 3] [--rounds 3]

Starts, on 127.0.0.1 only: (a) our server with batching, (b) our server with batching off, (c) a minimal
Starlette route returning a fixed body (the HTTP floor, same uvicorn), and times the bare jitted forward
in-process. ``wrk`` drives the servers with JSON infer requests at concurrency 1 and 32 (Python clients
top out near 8k requests/s here; wrk does not). Models: the 64-256-256-10 MLP, and a 4x2048 MLP whose
batch-1 forward takes over 1 ms (where batching has to pay for itself). The measurements run in
interleaved rounds (every server is up throughout; each round visits them all, in alternating order), and
each ratio is the median over rounds of ratios measured minutes apart at most, so that a busy shared
machine moves both sides of a ratio together. Prints a table of medians, then the ratios against the
targets of issue 5. Needs ``wrk`` (Debian: ``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aios_lab.procs import free_port  # noqa: E402

FLOOR_APP = textwrap.dedent("""
    import sys, uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route
    BODY = open(sys.argv[2], "rb").read()
    async def infer(request):
        await request.body()
        return Response(BODY, media_type="application/json")
    async def live(request):
        return Response(b"{}", media_type="application/json")
    app = Starlette(routes=[Route("/infer", infer, methods=["POST"]), Route("/v2/health/ready", live)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
""")


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def wrk(url: str, body: bytes, token: str | None, conns: int, seconds: float, workdir: Path) -> dict:
    script = workdir / f"post-{conns}.lua"
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"\n' if token else ""
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        + auth
        + "wrk.body = [==["
        + body.decode()
        + "]==]\n"
    )
    threads = 1 if conns == 1 else 2
    out = subprocess.run(
        [
            "wrk",
            "--timeout",
            "30s",
            f"-t{threads}",
            f"-c{conns}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        raise SystemExit(f"wrk saw errors against {url}:\n{out}")
    return {"rps": rps, "p50": _ms(lat["50"]), "p99": _ms(lat["99"])}


def _ms(s: str) -> float:
    v, unit = re.fullmatch(r"([\d.]+)(\w+)", s).groups()
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def bare_forward(model: str, x, seconds: float = 2.0) -> float:
    """Median ms of the registry's jitted forward on one request's rows, in-process (async dispatch off)."""
    import numpy as np

    from aios_lab import registry

    m = registry.load(model, audit=False)
    f, xx = m.forward, np.concatenate([x, x])  # the server runs a lone row padded to 2 rows
    for _ in range(20):
        f(xx)
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        f(xx)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", 3)))
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)))
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")

    home = Path(tempfile.mkdtemp(prefix="aios-bench-serve-"))
    os.environ["AIOS_HOME"] = str(home)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)
    import numpy as np
    import orjson

    from aios_lab import registry
    from aios_lab.serve import default_token
    from aios_lab.train.models import build

    for name, width, depth in (("mlp", 256, 2), ("big", 2048, 4)):
        spec = {"kind": "builtin", "name": "mlp", "config": {"width": width, "depth": depth}}
        params = build(spec, "classification", 10, (64,)).init(jax.random.PRNGKey(0), np.zeros((1, 64), np.float32))
        registry.publish_params(name, spec, params, task="classification", input_shape=(64,), n_outputs=10)
    token = default_token()
    x = np.random.default_rng(0).normal(size=(1, 64)).astype(np.float32)
    body = orjson.dumps(
        {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": x.ravel().tolist()}]}
    )
    bare = {m: bare_forward(m, x) for m in ("mlp", "big")}

    procs, rounds = [], []
    try:
        floor_port = free_port()
        reply = home / "reply.json"
        reply.write_bytes(
            orjson.dumps(
                {
                    "model_name": "mlp",
                    "model_version": "1",
                    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [1, 10], "data": [0.1] * 10}],
                }
            )
        )
        servers = {"(c) starlette floor": (floor_port, [sys.executable, "-c", FLOOR_APP, str(floor_port), str(reply)])}
        for label, extra in (("(a) batched", []), ("(b) unbatched", ["--no-batching"])):
            port = free_port()
            servers[label] = (port, [sys.executable, "-m", "aios_lab.serve", "--port", str(port), *extra])
        for port, argv in servers.values():
            log = open(home / f"{port}.out", "wb")
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
            procs.append(p)
            wait_ready(f"http://127.0.0.1:{port}", p)
        runs = [
            ("(c) starlette floor", "mlp", "/infer", None, (1, 32)),
            ("(a) batched", "mlp", "/v2/models/mlp/infer", token, (1, 32)),
            ("(b) unbatched", "mlp", "/v2/models/mlp/infer", token, (1, 32)),
            ("(a) batched", "big", "/v2/models/big/infer", token, (1, 32)),
            ("(b) unbatched", "big", "/v2/models/big/infer", token, (1, 32)),
        ]
        plan = [(label, model, path, tok, c) for label, model, path, tok, conns in runs for c in conns]
        for n in range(args.rounds):
            got = {}
            for label, model, path, tok, c in plan if n % 2 == 0 else plan[::-1]:
                r = wrk(f"http://127.0.0.1:{servers[label][0]}{path}", body, tok, c, args.seconds, home)
                got[(label, model, c)] = r
                print(
                    f"round {n + 1}  {label:22s} {model:4s} c={c:<3d} {r['rps']:9.0f} req/s  p50 {r['p50']:7.3f} ms  "
                    f"p99 {r['p99']:7.3f} ms",
                    flush=True,
                )
            rounds.append(got)
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(home, ignore_errors=True)

    median = lambda values: float(np.median(values))
    print(f"\nmedians of {len(rounds)} rounds")
    print("| server | model | c | requests/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|")
    for key in rounds[0]:
        label, model, c = key
        rps, p50, p99 = (median([r[key][k] for r in rounds]) for k in ("rps", "p50", "p99"))
        print(f"| {label} | {model} | {c} | {rps:.0f} | {p50:.3f} | {p99:.3f} |")
    for m in ("mlp", "big"):
        print(f"| bare jitted forward, in-process | {m} | - | {1000 / bare[m]:.0f} | {bare[m]:.3f} | - |")

    def per_round(fn) -> float:
        return median([fn(r) for r in rounds])

    a, b, c = "(a) batched", "(b) unbatched", "(c) starlette floor"
    floor_ratio = per_round(lambda r: r[(a, "mlp", 32)]["rps"] / r[(c, "mlp", 32)]["rps"])
    gap = per_round(lambda r: r[(a, "mlp", 1)]["p50"] - r[(c, "mlp", 1)]["p50"] - bare["mlp"])
    big = per_round(lambda r: r[(a, "big", 32)]["rps"] / r[(b, "big", 32)]["rps"])
    small = per_round(lambda r: r[(a, "mlp", 32)]["rps"] / r[(b, "mlp", 32)]["rps"])
    checks = [
        ("(a)/(c) requests/s at c=32, mlp", floor_ratio, ">= 0.6", floor_ratio >= 0.6),
        ("(a) p50 at c=1 minus ((c) p50 + bare forward), ms", gap, "<= 0.2", gap <= 0.2),
        ("(a)/(b) requests/s at c=32, 4x2048 mlp", big, ">= 3", big >= 3),
        ("(a)/(b) requests/s at c=32, mlp", small, "(info)", True),
    ]
    print("\n| ratio (median over rounds) | value | target | met |\n|---|---|---|---|")
    for name, value, target, met in checks:
        print(f"| {name} | {value:.2f} | {target} | {'yes' if met else 'NO'} |")


if __name__ == "__main__":
    main()
