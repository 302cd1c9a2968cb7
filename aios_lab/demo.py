"""The quickstart end to end, headless, ending with a summary table (``aios demo``, ``make demo``).

Declares ``sklearn:digits``, trains the built-in mlp on every device as a background job, compresses
it to int8, publishes it, serves it on 127.0.0.1 and times 100 calls over HTTP. Without AIOS_HOME
in the environment it works in a scratch AIOS_HOME (a new temporary folder) and leaves ~/.aios alone.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from contextlib import contextmanager

from .errors import AiosError
from .procs import free_port
from .render import Table


def _say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


@contextmanager
def _home(scratch: bool):
    """AIOS_HOME as given, or a new temporary folder for the duration (the caller's env is restored)."""
    if os.environ.get("AIOS_HOME") and not scratch:
        yield os.environ["AIOS_HOME"], False
        return
    before = os.environ.get("AIOS_HOME")
    os.environ["AIOS_HOME"] = tempfile.mkdtemp(prefix="aios-demo-")
    try:
        yield os.environ["AIOS_HOME"], True
    finally:
        if before is None:
            os.environ.pop("AIOS_HOME", None)
        else:
            os.environ["AIOS_HOME"] = before


def run_demo(
    steps: int = 300,
    devices: str | int = "all",
    port: int | None = None,
    calls: int = 100,
    scratch: bool = False,
    keep_serving: bool = False,
) -> Table:
    """Run the quickstart headless (in a scratch AIOS_HOME unless one is set) and return its summary table."""
    devices = str(devices)
    if steps < 1 or calls < 1:
        raise AiosError("--steps and --calls must be at least 1")
    if devices != "all" and not (devices.isdigit() and int(devices) >= 1):
        raise AiosError(f"--devices takes a number or 'all', not {devices!r}")
    with _home(scratch) as (home, scratch):
        return _run(steps, devices, port, calls, keep_serving, home, scratch)


def _run(steps: int, devices: str, port: int | None, calls: int, keep_serving: bool, home: str, scratch: bool) -> Table:
    import numpy as np
    import requests

    import aios_lab as aios

    t_start = time.monotonic()
    _say(f"AIOS_HOME {home}{' (scratch)' if scratch else ''}")
    ds = aios.dataset("digits", "sklearn:digits", split="train=0.8,val=0.1,test=0.1", seed=0)
    _say(f"dataset {ds.name}:v{ds.version} {ds.splits}")

    inv = aios.devices()
    n = len(inv["devices"]) if devices == "all" else int(devices)
    batch = max(n, 128 // n * n)
    name = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    job = aios.train(name, dataset="digits", model="mlp", devices=devices, steps=steps, batch=batch, lr=3e-3)
    _say(f"job {name}: {steps} steps of the mlp on {n} {inv['kind']} device(s), batch {batch} ...")
    state = job.wait(timeout=1800)
    if state != "succeeded":
        raise AiosError(f"the demo job {name} ended {state}: {job.error}; `aios logs {name}` has its log")
    rates = [m["examples_per_s"] / batch for m in job.metrics() if m.get("examples_per_s")]
    steps_per_s = statistics.median(rates[1:] or rates)  # the first row includes compilation
    test = job.evaluate("test")
    _say(f"trained: {steps_per_s:.0f} steps/s, test accuracy {test['accuracy']:.3f}")

    report = aios.compress(job, "int8", eval="test")
    _say(f"int8: {report.ratio:.2f}x smaller, accuracy {report.delta * 100:+.2f} points")
    mv = aios.publish(job, variant="int8", as_="demo-digits")
    aios.promote("demo-digits", "production", version=mv.version)  # production is protected: promote moves it
    _say(f"published demo-digits:v{mv.version} (production)")

    ep = aios.serve(port=port or free_port())
    from .serve import create_token

    token = create_token("infer", label="aios demo")
    x, y = ds.load("test")
    one = {
        "inputs": [
            {
                "name": "input",
                "shape": [1, *x.shape[1:]],
                "datatype": "FP32",
                "data": np.asarray(x[:1], np.float32).ravel().tolist(),
            }
        ]
    }
    url = f"{ep.url}/v2/models/demo-digits/infer"
    times = []
    try:
        with requests.Session() as s:
            s.headers["Authorization"] = f"Bearer {token}"
            for i in range(5 + calls):  # 5 untimed calls open the connection and warm the route
                t0 = time.perf_counter()
                r = s.post(url, json=one, timeout=30)
                if r.status_code != 200:
                    raise AiosError(f"the endpoint answered {r.status_code}: {r.text[:200]}")
                if i >= 5:
                    times.append(time.perf_counter() - t0)
            answer = r.json()
    finally:
        stopped = False if keep_serving else ep.stop()
    served = int(np.asarray(answer["outputs"][0]["data"]).argmax())
    _say(f"endpoint answered class {served} for a test digit labelled {int(y[0])}")

    endpoint = ep.url + (" (still serving)" if keep_serving else " (stopped)" if stopped else " (stopping)")
    rows = [
        ("dataset", f"{ds.name}:v{ds.version} sklearn:digits, " + ", ".join(f"{k} {v}" for k, v in ds.splits.items())),
        ("devices", f"{n} {inv['kind']}"),
        ("steps/s", f"{steps_per_s:.1f} (batch {batch}, {steps} steps)"),
        ("test accuracy", f"{test['accuracy']:.4f} ({test['rows']} rows)"),
        ("int8 size ratio", f"{report.ratio:.2f}x smaller ({report.bytes_before:,} -> {report.bytes_after:,} bytes)"),
        ("int8 accuracy delta", f"{report.delta * 100:+.2f} points"),
        ("endpoint", endpoint),
        ("p50 latency", f"{statistics.median(times) * 1e3:.2f} ms over {len(times)} calls (1 row, JSON)"),
    ]
    if keep_serving:
        rows.append(("token file", str(ep.token_file)))
    title = f"aios demo: {time.monotonic() - t_start:.0f} s, AIOS_HOME {home}"
    return Table(["what", "result"], rows, title=title)
