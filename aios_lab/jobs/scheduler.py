"""One scheduling pass: notice dead jobs, apply the queue policy, and launch the jobs it starts.

``schedule()`` is a write: only the submitting calls (train, resume, cancel, delete), a supervisor
whose job ended, and the queue keeper (``keeper.py``) run it; reads never do. The decisions come
from ``policy.plan`` over the rows read inside one ``BEGIN IMMEDIATE`` transaction, so two passes
racing from different processes can never hand out the same device: the second sees the first's
running jobs. Launching happens after the commit; a launch that fails for any reason fails the job
with the reason, so no job stays "running" with no process holding its devices.

Cluster jobs go through the same pass: the policy gets the connected cluster as last seen (the files
``cluster.target`` keeps; a pass never starts a process to look), and their supervisor is launched the
same way (it runs the gang on Ray; see ``cluster_run``).
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
from .policy import ClusterView, JobView, Plan, plan

MAX_AUTO_RESUMES = 2  # default retries after a worker dies without saying why
_LIVE = "SELECT * FROM jobs WHERE state IN ('queued','running','interrupted')"


def view(r: dict) -> JobView:
    """The policy's view of a decoded job row."""
    from ..cluster.capacity import GangShape

    gang = r["config"].get("gang") if r["config"].get("on") == "ray" else None
    info = json.loads(r["info"]) if r.get("info") else {}
    return JobView(
        name=r["name"],
        state=r["state"],
        n_devices=r["n_devices"],
        priority=r["priority"],
        created=r["created"],
        devices=tuple(r["devices"]),
        attempts=r["attempts"],
        max_retries=r["config"].get("max_retries", MAX_AUTO_RESUMES),
        cancel_requested=bool(r["cancel_requested"]),
        gang=GangShape(**gang) if gang else None,
        placement=info.get("placement_group"),
    )


def cluster_view() -> ClusterView | None:
    """The connected Ray cluster as last seen (files only), or None when none is connected."""
    from ..cluster import target

    if target.load() is None:
        return None
    snap = target.load_nodes() or {}
    return ClusterView(tuple(snap.get("nodes", ())), frozenset(snap.get("placement_groups", ())))


def schedule() -> list[str]:
    """Reap dead jobs, apply the policy and launch what it starts; returns the names started."""
    records.reap()
    inv, cluster = inventory(), cluster_view()
    if not plan([view(records.decode(r)) for r in catalog().query(_LIVE)], inv.count, cluster):
        return []  # the common case: no write transaction at all
    with catalog().tx() as db:  # decide again on the rows as they are under the write lock
        views = [view(records.decode(r)) for r in db.execute(_LIVE).fetchall()]
        decided = plan(views, inv.count, cluster)
        kinds = {v.name: v.gang.kind for v in views if v.gang is not None}
        _apply(db, decided, inv.kind, kinds)
    for name, _ids in decided.start:
        launch(name)
    return [name for name, _ in decided.start]


def _apply(db, p: Plan, kind: str, gang_kinds: dict[str, str]) -> None:
    now = time.time()
    for name in p.cancel:
        db.execute("UPDATE jobs SET state='cancelled', ended=?, updated=? WHERE name=?", (now, now, name))
    for name in p.requeue:
        db.execute("UPDATE jobs SET state='queued', attempts=attempts+1, updated=? WHERE name=?", (now, name))
    for name, why in p.fail:
        db.execute("UPDATE jobs SET state='failed', error=?, ended=?, updated=? WHERE name=?", (why, now, now, name))
    for name, ids in p.start:
        db.execute(
            "UPDATE jobs SET state='running', devices=?, device_kind=?, pid=NULL, supervisor_pid=NULL, "
            "started=COALESCE(started, ?), updated=? WHERE name=?",
            (json.dumps(list(ids)), gang_kinds.get(name, kind), now, now, name),
        )


def launch(name: str) -> int | None:
    """Start the job's supervisor in its own session, so it outlives whoever launched it.

    Any error while launching fails the job with the reason (and frees its devices); returns the pid.
    """
    proc = None
    try:
        job_dir(name).mkdir(parents=True, exist_ok=True)
        with config.open_private(log_path(name)) as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "aios_lab.jobs.supervisor", name],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "AIOS_HOME": str(config.home())},
            )
        records.update(name, {"state": "running"}, supervisor_pid=proc.pid)
    except Exception as exc:
        if proc is not None:
            proc.kill()
            proc.wait()
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        records.update(
            name,
            {"state": "running"},
            state="failed",
            pid=None,
            supervisor_pid=None,
            ended=time.time(),
            error=f"could not start the job: {why}; `%aios resume {name}` tries again",
        )
        return None
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it if we are still around
    return proc.pid


__all__ = ["MAX_AUTO_RESUMES", "cluster_view", "schedule", "launch", "view"]
