"""A cluster job inside its supervisor: the gang on Ray, with this machine's catalog as its only writer.

The supervisor (``supervisor.py``) stays the job's owner, as for a local job. For a cluster job it
becomes a Ray driver and calls ``cluster.gang.run_gang``: rank 0's metric rows come back to it and go
into the catalog through a ``MetricsSink``; the gang's state (placing, where each rank runs, the
trainer's start info) goes into the job's ``info``. The ranks never open SQLite.

A cancel or a SIGTERM to the supervisor stops every rank at one agreed step (each saves its part of the
checkpoint there), then the placement group is removed; a cancel while the placement group is still
pending removes it at once. A rank that dies (``kill -9``, a lost node) tears the gang down; the
supervisor starts a new one from the latest checkpoint, up to the job's ``max_retries``.
"""

from __future__ import annotations

import signal
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import AiosError
from . import records
from .sink import MetricsSink

CANCEL_POLL_S = 0.5  # the gang polls should_stop every 0.25 s; the catalog is read at most this often


class _Stop:
    """``should_stop`` for the gang: a SIGTERM to the supervisor, or a cancel recorded in the catalog."""

    def __init__(self, name: str):
        self.name = name
        self.signal: int | None = None
        self.cancelled = False
        self.checked = float("-inf")

    def on_signal(self, signum: int, _frame: Any) -> None:
        self.signal = signum

    def __call__(self) -> bool:
        if self.signal is not None:
            return True
        if not self.cancelled and time.monotonic() - self.checked >= CANCEL_POLL_S:
            self.checked = time.monotonic()
            r = records.row(self.name)
            self.cancelled = r is None or bool(r["cancel_requested"])
        return self.cancelled


class _Info:
    """Keeps the job's ``info`` up to date from the gang's states (``on_state``)."""

    def __init__(self, name: str, mine: dict[str, Any], ray: Any):
        self.name, self.mine, self.ray = name, mine, ray
        self.info: dict[str, Any] = {}
        self.t0 = time.monotonic()

    def on_state(self, s: dict[str, Any]) -> None:
        state = s["state"]
        print(f"[aios] gang {state} after {time.monotonic() - self.t0:.1f} s", flush=True)
        if state == "placing":
            self.info = {"gang": "placing", "placement_group": s["placement_group"], "ranks": []}
        elif state == "running":
            self.info.update(gang="starting", ranks=s["ranks"], coordinator=s["coordinator"])
        elif state == "started":
            self.info.update(s["info"], gang="running")
        else:  # stopping, ended
            self.info["gang"] = state
        records.update(self.name, self.mine, info=self.info)
        if state in ("running", "ended"):
            self.look()

    def look(self) -> None:
        """Refresh the cluster snapshot now, so the queue sees this gang placed (or gone) without waiting."""
        from ..cluster import target
        from ..cluster.api import snapshot_of
        from ..cluster.probe import describe

        try:
            target.save_nodes(snapshot_of(describe(self.ray)))
        except Exception as exc:  # only a faster queue is lost; the keeper looks again
            print(f"[aios] could not refresh the cluster's nodes: {exc}", flush=True)


def supervise_gang(name: str, owner: int) -> None:
    """Run cluster job ``name`` until it ends, restarting a gang that lost a rank; records how it ended."""
    from ..cluster.session import ray_session

    mine = {"supervisor_pid": owner}
    stop = _Stop(name)
    try:
        with ray_session() as ray:
            signal.signal(signal.SIGTERM, stop.on_signal)  # after Ray's set-up: a SIGTERM stops the gang at one step
            while _attempt(name, mine, stop, ray):
                pass
    except AiosError as exc:
        _end(name, mine, "failed", str(exc))
    except Exception as exc:  # a bug or an unexpected runtime error: keep the traceback in the log
        traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        _end(name, mine, "failed", f"{type(exc).__name__}: {first}")


def _attempt(name: str, mine: dict[str, Any], stop: _Stop, ray: Any) -> bool:
    """One gang from the latest checkpoint to its end; True if it lost a rank and should run again."""
    from ..cluster.capacity import GangShape
    from ..cluster.gang import GangSpec, RankLost, gang_config, run_gang

    j = records.row(name)
    if j is None or j["supervisor_pid"] != mine["supervisor_pid"] or j["state"] != "running":
        return False  # the job has a new owner, or was ended meanwhile
    cfg = j["config"]
    shape = GangShape(**cfg["gang"])
    sink = MetricsSink(name)
    sink.forget_after(_latest_step(cfg["checkpoint_dir"]))  # a resumed gang logs the steps after it again
    spec = GangSpec(
        gang_config({**cfg["train"], "steps": j["steps"]}, shape),
        cfg["checkpoint_dir"],
        cfg["dataset_path"],
        cfg["dataset_hash"],
        shape,
        name=name,
    )
    print(f"[aios] job {name}: gang of {shape.describe()} on the Ray cluster", flush=True)
    try:
        out = run_gang(spec, on_metrics=sink.add, on_state=_Info(name, mine, ray).on_state, should_stop=stop, ray=ray)
    except RankLost as exc:
        return _lost(name, mine, stop, str(exc))
    finally:
        sink.flush()
    if out["state"] == "succeeded":
        _end(name, mine, "succeeded", None)
    elif stop.cancelled:
        _end(name, mine, "cancelled", None)
    else:
        _end(name, mine, "interrupted", f"stopped by signal {stop.signal}; `%aios resume {name}` continues it")
    return False


def _lost(name: str, mine: dict[str, Any], stop: _Stop, why: str) -> bool:
    """A rank died: retry from the latest checkpoint while retries are left (True), else record the end."""
    j = records.row(name)
    if j is None or j["supervisor_pid"] != mine["supervisor_pid"]:
        return False
    if stop() and stop.cancelled:
        _end(name, mine, "cancelled", why)
        return False
    retries = j["config"]["max_retries"]
    if stop.signal is not None or j["attempts"] >= retries:
        _end(name, mine, "interrupted", f"{why}; `%aios resume {name}` continues it")
        return False
    print(f"[aios] {why}; resuming from the latest checkpoint (attempt {j['attempts'] + 1} of {retries})", flush=True)
    return records.update(name, mine, attempts=j["attempts"] + 1, error=why)


def _end(name: str, mine: dict[str, Any], state: str, error: str | None) -> None:
    records.update(name, mine, state=state, error=error, ended=time.time(), pid=None)
    print(f"[aios] job {name} {state}{': ' + error if error else ''}", flush=True)


def _latest_step(directory: str) -> int:
    """The step of the latest finished checkpoint in ``directory`` (0 when there is none)."""
    from ..train.checkpoints import Checkpoints

    if "://" not in directory and not Path(directory).exists():
        return 0
    with Checkpoints(directory, read_only=True) as ckpts:
        step = ckpts.latest_step() or 0
    if step:
        print(f"[aios] resuming from the checkpoint at step {step}", flush=True)
    return step
