"""``python -m aios_lab.jobs.worker JOB``: trains one job on the devices its environment shows.

Started by the job's supervisor with ``CUDA_VISIBLE_DEVICES`` (or the XLA host device count)
already set. It reads the job from the catalog, resumes from the latest checkpoint, streams
metrics back, polls for a cancel request, and records how it ended. Exit codes: 0 ended
(succeeded, cancelled or stopped by a signal), 3 failed for a reason that a retry cannot fix.

In a multi-process job the lead (process 0) alone polls for a cancel and writes the catalog; every
process stops at the step the lead decides (``agreed_stop``), so all of them save one checkpoint there.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback

from .. import config
from ..errors import AiosError
from ..worker_hooks import WorkerHooks
from . import records
from .agreed_stop import NO_PREEMPTION_SERVICE, should_stop as agreed
from .paths import checkpoint_dir
from .sink import MetricsSink

CANCEL_POLL_S = 0.5


def main(argv: list[str] | None = None) -> int:
    config.private_umask()
    os.environ.update(NO_PREEMPTION_SERVICE)  # before JAX loads: SIGTERM stays ours
    p = argparse.ArgumentParser(prog="python -m aios_lab.jobs.worker")
    p.add_argument("job")
    p.add_argument("--coordinator", help="jax.distributed coordinator address host:port")
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    args = p.parse_args(argv)
    name, lead = args.job, args.process_id == 0

    from ..train.trainer import TrainConfig, train

    j = records.row(name)
    cfg = TrainConfig.from_json(
        {
            **j["config"]["train"],
            "steps": j["steps"],
            "coordinator": args.coordinator,
            "num_processes": args.num_processes,
            "process_id": args.process_id,
        }
    )
    stop, why = threading.Event(), {}

    def on_signal(signum, _frame):
        why["signal"] = signum
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def watch_cancel():
        while not stop.wait(CANCEL_POLL_S):
            r = records.row(name)
            if r is None or r["cancel_requested"]:
                why["cancel"] = True
                stop.set()

    if lead:
        threading.Thread(target=watch_cancel, daemon=True).start()
    sink = MetricsSink(name) if lead else None
    hooks = WorkerHooks(name, stop) if lead else None  # a sweep's pruner, profile requests
    print(
        f"[aios] worker {args.process_id}/{args.num_processes} of job {name} starting (pid {os.getpid()})",
        flush=True,
    )

    def on_metrics(row):
        if sink:
            sink.add(row)
        if hooks:
            hooks.on_row(row)

    if sink:  # a resumed run logs the steps after its checkpoint again
        sink.forget_after(_latest_checkpoint(name))

    try:
        summary = train(
            cfg,
            on_metrics=on_metrics,
            should_stop=(hooks.wrap if hooks else _same)(agreed(stop.is_set, args.num_processes)),
            checkpoint_dir=checkpoint_dir(name),
            on_start=(lambda info: records.update(name, info=info)) if lead else None,
        )
        if hooks:
            hooks.close()
        if args.coordinator:  # every process leaves together, before the lead's catalog writes
            import jax

            jax.distributed.shutdown()
    except AiosError as exc:
        return _end(name, lead, sink, "failed", str(exc), code=3)
    except Exception as exc:  # a bug or an unexpected runtime error: keep the traceback in the log
        traceback.print_exc()
        return _end(
            name, lead, sink, "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", code=3
        )
    if hooks and hooks.pruned:
        return _end(name, lead, sink, "pruned", None)
    if summary.get("stopped") and not why:  # another process was signalled: all stopped at one step
        why["signal"] = "to another worker"
    if why.get("cancel"):
        return _end(name, lead, sink, "cancelled", None)
    if why.get("signal"):
        return _end(
            name, lead, sink, "interrupted", f"stopped by signal {why['signal']}; `%aios resume {name}` continues it"
        )
    return _end(name, lead, sink, "succeeded", None)


def _same(fn):
    return fn


def _latest_checkpoint(name: str) -> int:
    from ..train.checkpoints import Checkpoints

    if not checkpoint_dir(name).exists():
        return 0
    with Checkpoints(checkpoint_dir(name), read_only=True) as ckpts:
        step = ckpts.latest_step() or 0
    if step:
        print(f"[aios] resuming from the checkpoint at step {step}", flush=True)
    return step


def _end(name: str, lead: bool, sink: MetricsSink | None, state: str, error: str | None, code: int = 0) -> int:
    if sink:
        sink.flush()
    if lead:
        records.update(name, state=state, error=error, ended=time.time(), pid=None)
    print(f"[aios] job {name} {state}{': ' + error if error else ''}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
