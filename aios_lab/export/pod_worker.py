"""One worker of an exported training job: ``python -m aios_lab.export.pod_worker --config /etc/aios/job.json``.

What each pod of ``aios export JOB --to jobset DIR`` runs. ``jax.distributed.initialize()`` with no
arguments finds its place by itself under a JobSet (JAX's Kubernetes cluster detection): the
coordinator is pod 0 of the job (``JOBSET-workers-0-0.JOBSET:55527``), the process count is the Job's
``parallelism`` and this process's id its ``JOB_COMPLETION_INDEX``. ``--coordinator``, ``--processes``
and ``--process-id`` set them by hand instead (any other launcher, or a test on one machine).

The job document (``job.json``): ``{"job", "train": TrainConfig, "dataset": {"path", "hash"},
"checkpoint_dir"}``; the dataset and the checkpoint folder are on storage every pod reaches. The run
resumes from the latest checkpoint there, so a JobSet restart after a lost pod continues the job.
Rank 0 prints one JSON line per metrics row (``kubectl logs`` shows the curve) and the summary last.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m aios_lab.export.pod_worker", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="the job document (mounted from the ConfigMap)")
    p.add_argument("--coordinator", help="HOST:PORT of process 0 (default: found by jax.distributed)")
    p.add_argument("--processes", type=int, help="how many processes (default: found by jax.distributed)")
    p.add_argument("--process-id", type=int, help="this process's id (default: found by jax.distributed)")
    return p


def run(job: dict[str, Any], coordinator: str | None, processes: int | None, process_id: int | None) -> dict:
    """Join the job's processes and train; returns the trainer's summary."""
    import jax

    from ..cluster.datasets import open_version
    from ..train.trainer import TrainConfig, train

    if coordinator is None:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator, processes, process_id)
    rank = jax.process_index()
    cfg = TrainConfig.from_json(
        {**job["train"], "coordinator": None, "num_processes": jax.process_count(), "process_id": rank}
    )
    where = f"pod {socket.gethostname()} (process {rank})"
    ds = open_version(job["dataset"]["path"], job["dataset"]["hash"], where=where)
    emit = (lambda row: print(json.dumps(row), flush=True)) if rank == 0 else None
    summary = train(cfg, on_metrics=emit, checkpoint_dir=job["checkpoint_dir"], dataset=ds)
    jax.distributed.shutdown()
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with open(args.config) as f:
        job = json.load(f)
    summary = run(job, args.coordinator, args.processes, args.process_id)
    print(json.dumps({"summary": summary}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
