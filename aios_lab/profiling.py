"""``aios.profile(job, steps=20)`` / ``%aios profile JOB [--steps N]``: a ``jax.profiler`` trace of a running job.

The kernel leaves a request file in the job's folder; the job's worker (``ProfileHook``, polled once per step
at the cost of a clock read, looking for the file at most every ``POLL_S``) starts a trace at its next step,
stops it ``steps`` steps later and says so in ``status.json``; the job never restarts. The trace is kept
under the job, ``AIOS_HOME/jobs/JOB/profiles/ID/trace/`` (the layout XProf and TensorBoard's profile plugin
read), and the kernel parses it into a step-time breakdown (``profile_trace.breakdown``).
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from . import config
from .errors import AiosError, Conflict, InvalidInput
from .profile_trace import COLORS, LABELS, PARTS, breakdown

POLL_S = 0.5
MAX_STEPS = 1000
REQUEST = "request.json"
_ID = re.compile(r"^[a-z0-9-]{1,64}$")


def profiles_dir(job: str) -> Path:
    from .jobs.paths import job_dir

    return job_dir(job) / "profiles"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` whole or not at all (a temp file renamed into place)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with config.open_private(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


# -- in the worker -------------------------------------------------------------------------------


class ProfileHook:
    """Picks up a profile request in a job's worker and traces the next ``steps`` steps (``tick`` once a step)."""

    def __init__(self, job: str):
        self.folder = profiles_dir(job)
        self.next_look = 0.0
        self.active: dict[str, Any] | None = None

    def tick(self) -> None:
        if self.active is not None:
            self.active["left"] -= 1
            if self.active["left"] <= 0:
                self._stop()
        elif time.monotonic() >= self.next_look:
            self.next_look = time.monotonic() + POLL_S
            self._look()

    def _look(self) -> None:
        request = self.folder / REQUEST
        if not request.exists():
            return
        ask = _read_json(request) or {}
        request.unlink(missing_ok=True)
        pid, steps = str(ask.get("id", "")), ask.get("steps")
        if not _ID.match(pid) or not isinstance(steps, int) or not 0 < steps <= MAX_STEPS:
            return
        out = config.private_dir(self.folder / pid)
        import jax

        try:
            jax.profiler.start_trace(str(out / "trace"))
        except Exception as exc:  # another trace is running in this process
            _write_json(out / "status.json", {"state": "failed", "error": f"{type(exc).__name__}: {exc}"})
            return
        self.active = {"id": pid, "out": out, "steps": steps, "left": steps, "t0": time.time()}
        _write_json(out / "status.json", {"state": "tracing", "steps": steps, "started": self.active["t0"]})

    def _stop(self) -> None:
        import jax

        a, self.active = self.active, None
        done = a["steps"] - max(0, a["left"])
        try:
            jax.profiler.stop_trace()
            status = {"state": "done", "steps": done, "started": a["t0"], "ended": time.time()}
        except Exception as exc:
            status = {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}
        _write_json(a["out"] / "status.json", status)

    def close(self) -> None:
        """The run ended: stop a trace still going (with the steps it got)."""
        if self.active is not None:
            self._stop()


# -- in the kernel -------------------------------------------------------------------------------


class Profile:
    """One trace of a job: where it is, and its step-time breakdown.

    >>> p = aios.profile("digits-mlp", steps=20)
    >>> p.breakdown["fractions"]
    """

    def __init__(self, job: str, pid: str, breakdown: dict[str, Any]):
        self.job, self.id, self.breakdown = job, pid, breakdown

    @property
    def path(self) -> Path:
        """The trace folder: ``xprof --logdir PATH`` or ``tensorboard --logdir PATH`` opens it."""
        return profiles_dir(self.job) / self.id / "trace"

    def to_json(self) -> dict[str, Any]:
        return {"job": self.job, "id": self.id, "path": str(self.path), **self.breakdown}

    def table(self):
        from .render import Table

        b, rows = self.breakdown, []
        for part in PARTS:
            rows.append((LABELS[part], b["ms_per_step"][part], 100 * b["fractions"][part]))
        return Table(
            ["part", "ms per step", "% of step"],
            rows,
            title=f"profile {self.id} of {self.job}: {b['steps']} steps, {b['step_ms']:.3g} ms per step",
        )

    def __str__(self) -> str:
        return f"{self.table()}\ntrace: {self.path}\nopen it with: xprof --logdir {self.path}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        b = self.breakdown
        bar = "".join(
            f"<div title='{LABELS[p]} {100 * b['fractions'][p]:.0f}%' style='flex:0 0 "
            f"{100 * min(1.0, b['fractions'][p]):.2f}%;background:{COLORS[p]}'></div>"
            for p in PARTS
            if b["fractions"][p] > 0
        )
        legend = " ".join(
            f"<span style='white-space:nowrap'><span style='display:inline-block;width:10px;height:10px;"
            f"background:{COLORS[p]}'></span> {LABELS[p]} {100 * b['fractions'][p]:.0f}%</span>"
            for p in PARTS
        )
        return (
            f"<div class='aios-profile' data-job='{html.escape(self.job)}'>"
            f"<div style='display:flex;height:14px;width:100%;max-width:520px;background:#eee;overflow:hidden'>{bar}"
            f"</div><div style='font-size:12px;margin:4px 0'>{legend}</div>{self.table()._repr_html_()}"
            f"<div style='font-size:12px'>trace: <code>{html.escape(str(self.path))}</code> "
            f"(<code>xprof --logdir {html.escape(str(self.path))}</code>)</div></div>"
        )


def _check_steps(steps: Any) -> int:
    try:
        n = int(steps)
        if n != float(steps):
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidInput(f"--steps must be a whole number from 1 to {MAX_STEPS}, not {steps!r}") from None
    if not 0 < n <= MAX_STEPS:
        raise InvalidInput(f"--steps must be a whole number from 1 to {MAX_STEPS}, not {steps!r}")
    return n


def profile(job: str, steps: int = 20, timeout: float = 300.0) -> Profile:
    """Trace ``steps`` steps of running job ``job`` (the worker starts and stops the trace itself), keep the trace
    under the job and return its step-time breakdown. Waits at most ``timeout`` seconds."""
    from .jobs import job as get_job

    steps = _check_steps(steps)
    j = get_job(job)
    r = j.refresh()
    if r["config"].get("on") == "ray":
        raise InvalidInput(f"job {job!r} runs on a Ray cluster; %aios profile traces local jobs")
    if r["state"] != "running":
        raise Conflict(f"job {job!r} is {r['state']}; %aios profile traces a running job")
    left = r["steps"] - r["step"]
    if steps >= left:
        raise InvalidInput(f"job {job!r} has {left} steps left; ask for fewer with --steps N (N < {left})")
    folder = config.private_dir(profiles_dir(job))
    pid = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
    if (folder / REQUEST).exists():
        raise Conflict(f"a profile of job {job!r} is being taken; wait for it")
    _write_json(folder / REQUEST, {"id": pid, "steps": steps})
    status = _wait(job, folder, pid, timeout)
    if status.get("state") != "done":
        raise AiosError(f"the profile of job {job!r} failed: {status.get('error')}")
    result = breakdown(folder / pid / "trace", status["steps"])
    result.update(started=status["started"], ended=status["ended"])
    _write_json(folder / pid / "breakdown.json", result)
    return Profile(job, pid, result)


def _wait(job: str, folder: Path, pid: str, timeout: float) -> dict[str, Any]:
    from .jobs import job as get_job

    deadline = time.monotonic() + timeout
    while True:
        status = _read_json(folder / pid / "status.json") or {}
        if status.get("state") in ("done", "failed"):
            return status
        picked = bool(status)
        state = get_job(job).state
        if (state != "running" and not picked) or time.monotonic() > deadline:
            (folder / REQUEST).unlink(missing_ok=True)
            why = f"job {job!r} is {state}" if state != "running" else f"no profile after {timeout:.0f} s"
            raise Conflict(f"{why} before the trace was taken; profile a running job with steps left")
        if state != "running" and picked:  # the run ended while tracing: the worker stops the trace at its end
            time.sleep(0.5)
            status = _read_json(folder / pid / "status.json") or {}
            if status.get("state") in ("done", "failed"):
                return status
            raise Conflict(f"job {job!r} ended while it was being traced; nothing usable was kept")
        time.sleep(0.1)


def profiles(job: str) -> list[Profile]:
    """The profiles taken of ``job``, oldest first (those whose breakdown was computed)."""
    folder = profiles_dir(job)
    out = []
    for sub in sorted(folder.iterdir()) if folder.is_dir() else []:
        b = _read_json(sub / "breakdown.json")
        if b is not None:
            out.append(Profile(job, sub.name, b))
    if not out and not folder.is_dir():
        from .jobs import job as get_job

        get_job(job)  # NotFound for an unknown job
    return out


__all__ = ["POLL_S", "Profile", "ProfileHook", "profile", "profiles", "profiles_dir"]
