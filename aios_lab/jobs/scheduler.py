"""The queue: give queued jobs disjoint devices in priority order, then start their supervisors.

Policy: jobs wait in order of (priority descending, then first come); the head of the queue
blocks those behind it (no back-filling), so a large job is never starved by small ones.
Every process that touches jobs (kernels, supervisors, the CLI, the Jupyter server) calls
``schedule()``, so the queue moves with no notebook open: a supervisor calls it as its job ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from .. import config
from ..catalog import catalog
from . import records
from .devices import inventory
from .paths import job_dir, log_path

MAX_AUTO_RESUMES = 2  # default retries after a worker dies without saying why


def _requeue_interrupted() -> None:
    """Interrupted jobs with retries left go back to the queue (resume from their checkpoint)."""
    for j in records.rows(("interrupted",)):
        if j["cancel_requested"]:
            records.update(j["name"], state="cancelled", ended=time.time())
        elif j["attempts"] < j["config"]["max_retries"]:
            with catalog().tx() as db:
                db.execute(
                    "UPDATE jobs SET state='queued', attempts=attempts+1, updated=? "
                    "WHERE name=? AND state='interrupted'",
                    (time.time(), j["name"]),
                )


def schedule() -> list[str]:
    """Start every queued job whose devices are free now; returns the names started."""
    records.reap()
    _requeue_interrupted()
    if catalog().one("SELECT 1 FROM jobs WHERE state='queued' LIMIT 1") is None:
        return []  # the common case for readers: no write transaction at all
    inv, started = inventory(), []
    with catalog().tx() as db:
        busy = set()
        for (devices,) in db.execute("SELECT devices FROM jobs WHERE state='running'"):
            busy.update(json.loads(devices or "[]"))
        free = [i for i in range(inv.count) if i not in busy]
        queue = db.execute(
            "SELECT name, n_devices FROM jobs WHERE state='queued' ORDER BY priority DESC, created"
        ).fetchall()
        for name, n in queue:
            if n > len(free):
                break
            take, free = free[:n], free[n:]
            now = time.time()
            db.execute(
                "UPDATE jobs SET state='running', devices=?, device_kind=?, pid=NULL, "
                "supervisor_pid=NULL, started=COALESCE(started, ?), updated=? WHERE name=?",
                (json.dumps(take), inv.kind, now, now, name),
            )
            started.append(name)
    for name in started:
        try:
            launch(name)
        except OSError as exc:
            records.update(name, state="failed", error=f"could not start the worker: {exc}", ended=time.time())
    return started


def launch(name: str) -> int:
    """Start the job's supervisor in its own session, so it outlives whoever launched it."""
    job_dir(name).mkdir(parents=True, exist_ok=True)
    with config.open_private(log_path(name)) as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aios_lab.jobs.supervisor", name],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "AIOS_HOME": str(job_dir(name).parents[1])},
        )
    records.update(name, supervisor_pid=proc.pid)
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it if we are still around
    return proc.pid
