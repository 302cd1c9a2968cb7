"""The queue policy: a pure function from the jobs and the machine's devices to what happens next.

Jobs wait in order of priority (higher first), then first come; the head of the queue blocks those
behind it (no back-filling), so a job that needs many devices is never starved by small ones. A job
asks for a number of devices and gets the lowest free ids. An interrupted job with retries left goes
back to the queue in its old place; one whose cancel was asked for is cancelled instead of started.

Cluster jobs (``JobView.gang``) hold no local devices: they wait in a queue of their own, by the same
order, and the head starts only when the gang fits the cluster's free resources as last seen
(``ClusterView``, from ``AIOS_HOME/cluster/nodes.json``). While a started gang is not yet shown placed
by that look, no other gang starts: the look would count its resources as free.

Nothing here reads the catalog or starts a process: ``scheduler.schedule`` feeds it rows and carries
out its decisions.

>>> plan([JobView("a", "queued", 4), JobView("b", "queued", 8)], n_devices=8).start
(('a', (0, 1, 2, 3)),)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..cluster.capacity import GangShape, fits_now

DEFAULT_PRIORITY = 0


@dataclass(frozen=True)
class JobView:
    """What the policy knows of one job (a catalog row, reduced)."""

    name: str
    state: str  # queued | running | interrupted (other states are ignored)
    n_devices: int
    priority: int = DEFAULT_PRIORITY
    created: float = 0.0
    devices: tuple[int, ...] = ()  # held while running
    attempts: int = 0
    max_retries: int = 0
    cancel_requested: bool = False
    gang: GangShape | None = None  # a cluster job: what it asks of the Ray cluster (it holds no local device)
    placement: str | None = None  # a running gang's placement group, once it asked for one


@dataclass(frozen=True)
class ClusterView:
    """The connected Ray cluster as last seen: its nodes (``alive``, ``resources``, ``available``) and the
    placement groups that look showed reserved."""

    nodes: Sequence[dict[str, Any]] = ()
    placed: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Plan:
    """The decisions of one scheduling pass, in the order they are carried out."""

    cancel: tuple[str, ...] = ()  # asked to cancel while waiting: never started again
    requeue: tuple[str, ...] = ()  # interrupted with retries left: back in the queue, one attempt more
    fail: tuple[tuple[str, str], ...] = ()  # (job, why) for jobs that can never get their devices here
    start: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (job, device ids) to start now, in order

    def __bool__(self) -> bool:
        return bool(self.cancel or self.requeue or self.fail or self.start)


def order(queue: Iterable[JobView]) -> list[JobView]:
    """The queue in the order jobs start: priority descending, then first come (then name, for ties)."""
    return sorted(queue, key=lambda j: (-j.priority, j.created, j.name))


def plan(jobs: Iterable[JobView], n_devices: int, cluster: ClusterView | None = None) -> Plan:
    """Decide which waiting jobs start now and on which device ids, given every job, the device count and
    the connected cluster (None: none is connected)."""
    jobs = list(jobs)
    busy = {d for j in jobs if j.state == "running" and j.gang is None for d in j.devices}
    free = [d for d in range(n_devices) if d not in busy]
    cancel, requeue, fail, start, waiting = [], [], [], [], []
    for j in jobs:
        if j.state == "interrupted":
            if j.cancel_requested:
                cancel.append(j.name)
            elif j.attempts < j.max_retries:
                requeue.append(j.name)
                waiting.append(j)
        elif j.state == "queued":
            if j.cancel_requested:
                cancel.append(j.name)
            else:
                waiting.append(j)
    for j in order(w for w in waiting if w.gang is None):
        if j.n_devices > n_devices:
            fail.append((j.name, f"needs {j.n_devices} devices and this machine has {n_devices}"))
            continue
        if j.n_devices > len(free):
            break  # the head waits for its devices; nobody overtakes it
        take, free = tuple(free[: j.n_devices]), free[j.n_devices :]
        start.append((j.name, take))
    gangs = order(w for w in waiting if w.gang is not None)
    if gangs and cluster is None:
        fail += [(j.name, "no Ray cluster connected; `%aios cluster connect HOST:PORT`, then resume it") for j in gangs]
    elif gangs and _settled(jobs, cluster) and fits_now(gangs[0].gang, cluster.nodes):
        start.append((gangs[0].name, ()))  # one gang per pass: the next waits for a look that shows it placed
    return Plan(tuple(cancel), tuple(requeue), tuple(fail), tuple(start))


def _settled(jobs: list[JobView], cluster: ClusterView) -> bool:
    """True when every running gang is shown placed by the cluster's last look (its resources counted as used)."""
    return all(j.placement in cluster.placed for j in jobs if j.state == "running" and j.gang is not None)


__all__ = ["DEFAULT_PRIORITY", "ClusterView", "JobView", "Plan", "order", "plan"]
