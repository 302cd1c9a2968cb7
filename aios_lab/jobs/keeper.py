"""The queue keeper: one detached process per AIOS_HOME that moves the queue (``keeper.main()``).

Reads (``Job.state``, ``aios.jobs()``, the sidebar, the widget) never schedule, so something else
must notice a job that ended or died and start the next one with no notebook open. Every write that
can leave work behind (train, resume, cancel, delete), every supervisor whose job ends and every
``Job.wait`` calls :func:`ensure`: when jobs are queued or running and no keeper holds the lock file,
it starts one. The keeper runs a scheduling pass every ``INTERVAL_S`` while anything is queued or
running, and exits when nothing is.

Two keepers never run at once: the keeper holds an exclusive ``flock`` on ``AIOS_HOME/jobs/_keeper.lock``
for its whole life (the kernel drops it when the process dies, even on SIGKILL); a second one finds
it taken and exits at once. Before exiting, a keeper lets go of the lock and looks for work once more,
so a job submitted while it was deciding to stop is never left waiting: either the submitter saw the
lock free and started a keeper, or this keeper sees the job. Correctness does not rest on the lock:
each pass decides inside one SQLite write transaction, so racing passes cannot hand out a device twice.

While cluster jobs wait, the keeper also looks at the Ray cluster (``NodeWatch``: a child process, from
a thread, at most every ``REFRESH_S``), so a gang starts once the cluster has room for it; with none
waiting it never looks.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import IO

from .. import config
from ..catalog import catalog

INTERVAL_S = 1.0
REFRESH_S = 2.0  # between the end of one look at the cluster and the start of the next


def lock_path() -> Path:
    """The keeper's lock file ('_' cannot start a job name, so it is never a job's folder)."""
    path = config.area("jobs", "_keeper.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def log_file() -> Path:
    return config.area("jobs", "_keeper.log")


def _try_lock() -> IO | None:
    f = config.open_private(lock_path(), "ab")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def busy() -> bool:
    """True while some job is queued or running (or interrupted with a retry left, about to be queued)."""
    return (
        catalog().one(
            "SELECT 1 FROM jobs WHERE state IN ('queued','running') OR (state='interrupted' AND "
            "cancel_requested=0 AND attempts < COALESCE(json_extract(config, '$.max_retries'), 0)) LIMIT 1"
        )
        is not None
    )


def alive() -> bool:
    """True if a keeper holds the lock of this AIOS_HOME now."""
    held = _try_lock()
    if held is None:
        return True
    held.close()
    return False


def ensure() -> bool:
    """Start a keeper if there is work and none runs; True if this call started one."""
    if not busy() or alive():
        return False
    spawn()
    return True


def spawn() -> subprocess.Popen:
    """Start a keeper in its own session, so it outlives the process that asked for it."""
    with config.open_private(log_file()) as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from aios_lab.jobs.keeper import main; main()"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "AIOS_HOME": str(config.home())},
        )
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it if we are still around
    return proc


def cluster_waiting() -> bool:
    """True while a cluster job is queued (the queue needs fresh looks at the cluster's free resources)."""
    found = catalog().one("SELECT 1 FROM jobs WHERE state='queued' AND json_extract(config, '$.on')='ray' LIMIT 1")
    return found is not None


class NodeWatch:
    """Refreshes the cluster's node snapshot from a thread while cluster jobs wait (``tick`` once a pass)."""

    def __init__(self, every: float = REFRESH_S):
        self.every = every
        self.thread: threading.Thread | None = None
        self.last = float("-inf")

    def tick(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            return
        if time.monotonic() - self.last < self.every or not cluster_waiting():
            return
        self.thread = threading.Thread(target=self._look, daemon=True)
        self.thread.start()

    def _look(self) -> None:
        from ..cluster import status
        from ..errors import AiosError

        try:
            status()  # a probe process; it rewrites nodes.json, which the next pass reads
        except AiosError as exc:
            print(f"[aios] could not look at the Ray cluster: {exc}", flush=True)
        finally:
            self.last = time.monotonic()


def run(interval: float = INTERVAL_S) -> int:
    """Keep the queue moving until nothing is queued or running; returns at once if another keeper runs."""
    from .scheduler import schedule

    db_file = config.home() / "catalog.sqlite"
    held = _try_lock()
    if held is None:
        return 0
    print(f"[aios] queue keeper {os.getpid()} started", flush=True)
    watch = NodeWatch()
    try:
        while db_file.exists():  # an AIOS_HOME removed under us has nothing left to keep
            try:
                schedule()
                watch.tick()
            except Exception:
                traceback.print_exc()
            if not busy():
                held.close()  # let go, then look once more: a job submitted meanwhile is never missed
                if not busy() or (held := _try_lock()) is None:
                    break
            time.sleep(interval)
    finally:
        if held is not None and not held.closed:
            held.close()
    print(f"[aios] queue keeper {os.getpid()} stopped: nothing queued or running", flush=True)
    return 0


def main() -> None:
    """The keeper process's entry (started with ``python -c``: the jobs package imports this module)."""
    config.private_umask()
    sys.exit(run())
