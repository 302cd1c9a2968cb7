"""``aios demo`` (``make demo``): the quickstart headless, run as a real CLI subprocess, ends with its table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)

AIOS = [sys.executable, "-c", "import sys; from aios_lab.cli import main; sys.exit(main())"]
ROWS = (
    "dataset",
    "devices",
    "steps/s",
    "test accuracy",
    "int8 size ratio",
    "int8 accuracy delta",
    "endpoint",
    "p50 latency",
)


def _table(stdout: str) -> dict[str, str]:
    """The summary table's rows: first column -> the rest of the line."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("aios demo:"))
    out = {}
    for line in lines[start + 3 :]:  # title, header, rule
        for key in ROWS:
            if line.startswith(key + "  "):
                out[key] = line[len(key) :].strip()
    return out


def test_demo_in_a_scratch_home_prints_the_summary(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "AIOS_HOME"}  # no AIOS_HOME: the demo makes a scratch one
    env["TMPDIR"] = str(tmp_path)  # ... here, so the test leaves nothing behind
    r = subprocess.run(AIOS + ["demo", "--steps", "200"], env=env, capture_output=True, text=True, timeout=560)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = _table(r.stdout)
    assert set(rows) == set(ROWS), r.stdout

    home = re.search(r"AIOS_HOME (\S+) \(scratch\)", r.stdout).group(1)
    assert Path(home).parent == tmp_path and (Path(home) / "catalog.sqlite").exists()

    assert rows["dataset"].startswith("digits:v1 sklearn:digits")
    assert re.fullmatch(r"8 cpu", rows["devices"])  # the tests' 8 forced host devices
    assert float(rows["steps/s"].split()[0]) > 0
    assert float(rows["test accuracy"].split()[0]) >= 0.9
    assert float(rows["int8 size ratio"].split("x")[0]) >= 3.5
    assert abs(float(rows["int8 accuracy delta"].split()[0])) <= 3.0
    url = re.fullmatch(r"(http://127\.0\.0\.1:\d+) \(stopped\)", rows["endpoint"])
    assert url, rows["endpoint"]
    p50 = re.fullmatch(r"([\d.]+) ms over 100 calls \(1 row, JSON\)", rows["p50 latency"])
    assert p50 and 0 < float(p50.group(1)) < 1000, rows["p50 latency"]

    # the endpoint was stopped: nothing answers on its port any more
    import urllib.request

    with pytest.raises(OSError):
        urllib.request.urlopen(url.group(1) + "/v2/health/live", timeout=2)


def test_demo_refuses_bad_flags_before_doing_anything(tmp_path):
    env = {**os.environ, "AIOS_HOME": str(tmp_path / "home")}
    r = subprocess.run(AIOS + ["demo", "--steps", "0"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--steps and --calls must be at least 1" in r.stderr
    assert not (tmp_path / "home" / "jobs").exists()
