"""``python -m aios_lab.jobs.supervisor JOB``: runs a job's worker process(es) and outlives them.

It restarts a worker that died without saying why (killed, out of memory) from the latest
checkpoint, up to the job's retry limit, and moves the queue on when the job ends (one scheduling
pass, so the next job starts at once, and a queue keeper if work is left and none runs). A cluster
job's supervisor runs its gang on Ray instead of local workers (``cluster_run``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from .. import config
from ..procs import free_port
from . import keeper, records
from .devices import worker_env
from .paths import log_path
from .scheduler import schedule


def run_workers(name: str) -> list[int]:
    """Start the job's worker processes (several for a jax.distributed job) and wait for them."""
    j = records.row(name)
    processes = int(j["config"].get("processes", 1))
    ids = j["devices"]
    cmd = [sys.executable, "-m", "aios_lab.jobs.worker", name]
    if processes > 1:
        cmd += ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", str(processes)]
    procs = []
    with config.open_private(log_path(name)) as log:
        for pid_index in range(processes):
            share = ids[pid_index * len(ids) // processes : (pid_index + 1) * len(ids) // processes]
            extra = ["--process-id", str(pid_index)] if processes > 1 else []
            procs.append(
                subprocess.Popen(
                    cmd + extra,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=worker_env(j["device_kind"], share),
                )
            )
    records.update(name, pid=procs[0].pid)

    def forward(signum, _frame):  # a SIGTERM to the supervisor checkpoints and stops the workers
        for p in procs:
            p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    codes = [p.wait() for p in procs]
    return codes


def supervise(name: str) -> None:
    """Run the job until it ends, restarting a worker that died; then move the queue on.

    A supervisor owns its job while ``supervisor_pid`` is its pid: after a cancel and a quick
    resume, the old supervisor finds a new owner and leaves the job alone.
    """
    me = os.getpid()
    if not records.update(name, {"state": "running"}, supervisor_pid=me):
        return  # the launch was given up (or the job cancelled) before we started: leave it alone
    mine = {"supervisor_pid": me}
    j = records.row(name)
    if j is not None and j["config"].get("on") == "ray":
        from .cluster_run import supervise_gang

        supervise_gang(name, me)
    else:
        _supervise_workers(name, mine)
    records.update(name, mine, supervisor_pid=None)
    schedule()  # the devices are free now: start the next job at once rather than at the keeper's next pass
    keeper.ensure()


def _supervise_workers(name: str, mine: dict) -> None:
    """Local workers until the job ends: a worker that died is restarted from the latest checkpoint."""
    me = mine["supervisor_pid"]
    while True:
        codes = run_workers(name)
        j = records.row(name)
        if j is None or j["supervisor_pid"] != me or j["state"] != "running":
            break  # the worker recorded how it ended, or the job has a new owner
        retries = j["config"]["max_retries"]
        why = f"worker exited with {codes}" if all(c >= 0 for c in codes) else f"worker killed by signal {-min(codes)}"
        if j["cancel_requested"]:
            records.update(name, mine, state="cancelled", pid=None, ended=time.time(), error=why)
            break
        if j["attempts"] >= retries:
            records.update(
                name, mine, state="interrupted", pid=None, error=f"{why}; `%aios resume {name}` continues it"
            )
            break
        print(
            f"[aios] {why}; resuming from the latest checkpoint (attempt {j['attempts'] + 1} of {retries})", flush=True
        )
        if not records.update(name, mine, attempts=j["attempts"] + 1, error=why):
            break


if __name__ == "__main__":
    config.private_umask()
    supervise(sys.argv[1])
