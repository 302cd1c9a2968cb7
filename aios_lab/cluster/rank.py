"""One rank of a training gang: a Ray actor that runs ``trainer.train`` in its process under jax.distributed.

Every rank runs the same loop on its host's devices; rank 0 also keeps the metric rows for the driver
(the job's supervisor) to collect. Ranks never open the catalog: the config, the dataset path and the
checkpoint directory come from the driver.

Stopping at the same step: the driver asks rank 0 (``request_stop``), and every rank stops at the step
rank 0 decides (``jobs.agreed_stop``, the scheme local ``--processes N`` jobs use too).
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
from typing import Any

from ..errors import AiosError
from ..jobs.agreed_stop import EVERY as DECIDE_EVERY, NO_PREEMPTION_SERVICE, AgreedStop
from . import reach


class Rank:
    """A gang member (wrapped with ``ray.remote`` by the gang runner; threaded so polls run beside ``train``)."""

    def __init__(self, rank: int, world: int, decide_every: int = DECIDE_EVERY, env: dict[str, str] | None = None):
        self.rank, self.world, self.every = rank, world, decide_every
        _set_env(env or {})
        _renice()
        self.rows: list[dict] = []
        self.info: dict | None = None
        self.stop_requested = False
        self.lock = threading.Lock()

    # -- placement -------------------------------------------------------------------------------

    def where(self) -> dict[str, Any]:
        """Where this rank runs: Ray node id, IP, host name and process id."""
        import ray

        return {
            "rank": self.rank,
            "node_id": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }

    def coordinator(self) -> str:
        """``IP:PORT`` on this rank's host for jax.distributed's coordinator (rank 0 only)."""
        import ray

        ip = ray.util.get_node_ip_address()
        with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as s:
            s.bind((ip, 0))
            port = s.getsockname()[1]
        return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

    # -- is the checkpoint directory shared? (see ``reach``) -------------------------------------

    def mark(self, directory: str) -> dict[str, Any]:
        return reach.mark(directory)

    def sees(self, directory: str, name: str) -> bool:
        return reach.sees(directory, name)

    def unmark(self, directory: str, name: str, made: list[str]) -> None:
        reach.unmark(directory, name, made)

    # -- training --------------------------------------------------------------------------------

    def train(self, config: dict, checkpoint_dir: str, dataset_path: str, dataset_hash: str | None) -> dict:
        """Run the training loop to its end or to an agreed stop; returns the trainer's summary."""
        import jax

        from ..train.trainer import TrainConfig, train
        from .datasets import open_version

        _renice()  # threads Ray started since __init__ too; JAX's pools, made below, inherit it
        cfg = TrainConfig.from_json(config)
        ds = open_version(dataset_path, dataset_hash, where=f"rank {self.rank} on {socket.gethostname()}")
        stop = AgreedStop(lambda: self.stop_requested, self.every) if cfg.num_processes > 1 else self._wanted
        summary = train(
            cfg,
            on_metrics=self._emit if self.rank == 0 else None,
            should_stop=stop,
            checkpoint_dir=checkpoint_dir,
            dataset=ds,
            on_start=self._started if self.rank == 0 else None,
        )
        if cfg.coordinator:
            jax.distributed.shutdown()  # every rank leaves together
        return summary

    def drain(self) -> dict[str, Any]:
        """Rows logged since the last drain, and the start info (rank 0)."""
        with self.lock:
            rows, self.rows = self.rows, []
            return {"rows": rows, "info": self.info}

    def request_stop(self) -> None:
        """Stop at the next decision step (rank 0; the others follow its decision)."""
        self.stop_requested = True

    def _wanted(self) -> bool:
        return self.stop_requested

    def _emit(self, row: dict) -> None:
        with self.lock:
            self.rows.append(row)

    def _started(self, info: dict) -> None:
        with self.lock:
            self.info = info


def _renice(niceness: int = 0) -> None:
    """Run every thread of this process at ``niceness`` (Linux nice is per thread; new threads inherit it).

    Ray starts worker processes at niceness 15 (``RAY_worker_niceness``) so they cannot starve its
    daemons; a rank is its host's training process, and at 15 anything else busy on the host starves it.
    Raising the priority back needs root or CAP_SYS_NICE; without them the rank keeps Ray's niceness
    (``RAY_worker_niceness=0`` in the nodes' environment at ``ray start`` does the same for every worker).
    """
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: the process's own priority only
        tids = [0]
    for tid in tids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) > niceness:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
        except OSError:  # no permission, or the thread ended meanwhile
            pass


def _set_env(env: dict[str, str]) -> None:
    """Set this process's environment before JAX loads; ``XLA_HOST_DEVICES``: the forced host device count."""
    env = {**NO_PREEMPTION_SERVICE, **env}
    count = env.pop("XLA_HOST_DEVICES", None)
    if "jax" in sys.modules and count is not None:
        raise AiosError("a rank's process has loaded JAX already; it cannot choose its devices any more")
    if count is not None:
        flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    os.environ.update(env)
