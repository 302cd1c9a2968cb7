"""Orbax checkpoints of the train state: async saves, keep the last few plus the best by an eval metric.

Orbax writes each step to a temporary directory and renames it when complete, so a half-written
checkpoint is never listed. Restores take an abstract target whose leaves carry the shardings wanted.

>>> ckpts = Checkpoints("/tmp/run/checkpoints", keep=3, best="accuracy")
>>> ckpts.save(100, state, metrics={"accuracy": 0.9}); ckpts.wait()
>>> state = ckpts.restore(ckpts.latest_step(), abstract_with_shardings)
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from .. import metric_names as mn
from ..errors import InvalidInput, NotFound

READ_RETRIES = 5  # a read-only look at a job's checkpoints while its worker removes old ones


class _QuietExpected(logging.Filter):
    """Orbax warns about what we do on purpose: checkpoints saved on stop or at the end carry no eval
    metrics, readers (job.params, job.checkpoints) open the manager read-only, and the array handler
    below replaces orbax's default."""

    EXPECTED = ("did not provide metrics", "read_only=True", "is read only", "overriding jax.Array")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.EXPECTED)


logging.getLogger("absl").addFilter(_QuietExpected())

# Orbax splits each replicated array into one slice per replica ("replica-parallel" saving) everywhere but
# on GPUs. On host devices that costs an eager slice per array and replica: seconds of compiling at a job's
# first save and ~100 ms every save after, all while training waits. One replica writes each array instead.
ocp.type_handlers.register_type_handler(
    jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True
)


class Checkpoints:
    """An orbax CheckpointManager with the retention policy "latest ``keep`` plus the best by ``best``"."""

    def __init__(
        self,
        directory: str | Path,
        keep: int = 3,
        best: str | None = "accuracy",
        async_save: bool = True,
        read_only: bool = False,
        reference: dict | None = None,
    ):
        self.directory = Path(directory).resolve()
        self.best = best
        self.reference = reference  # written into every checkpoint's metadata (e.g. a LoRA base version)
        higher = mn.HIGHER_IS_BETTER.get(best or "", True)
        metric = (lambda m: float(m[best])) if best else None
        keep_policies: list = [policies.LatestN(n=max(1, keep))]
        if best:
            keep_policies.append(
                policies.BestN(get_metric_fn=metric, reverse=not higher, n=1, keep_checkpoints_without_metrics=False)
            )
        options = ocp.CheckpointManagerOptions(
            best_fn=metric,  # makes orbax store each step's metrics
            best_mode="max" if higher else "min",
            preservation_policy=policies.AnyPreservationPolicy(keep_policies),
            enable_async_checkpointing=async_save,
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,
        )
        for attempt in range(READ_RETRIES):
            try:
                self.manager = ocp.CheckpointManager(
                    self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
                )
                break
            except (FileNotFoundError, NotADirectoryError):  # a listed step that the writer removed (keep=N) since
                if not read_only or attempt == READ_RETRIES - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def save(self, step: int, state: Any, metrics: dict | None = None, force: bool = True) -> bool:
        """Start saving ``state`` at ``step`` (async); ``metrics`` (e.g. eval accuracy) rank it for "best"."""
        metrics = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        if self.best and self.best not in metrics:
            metrics = None
        custom = {"aios": self.reference} if self.reference is not None else None
        return self.manager.save(
            int(step), args=ocp.args.StandardSave(state), metrics=metrics, force=force, custom_metadata=custom
        )

    def reference_at(self, step: int) -> dict | None:
        """What the checkpoint at ``step`` records about the weights it builds on (see ``reference``), or None."""
        meta = self.manager.metadata(int(step))
        return (getattr(meta, "custom_metadata", None) or {}).get("aios")

    def wait(self) -> None:
        """Block until every started save is on disk."""
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        """Steps of complete checkpoints, oldest first."""
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The complete checkpoint with the best ``best`` metric (the latest if none has metrics).

        Checkpoints ranked by another metric (a reader that does not know the job's task) are ranked by
        the first of accuracy, mse, loss that they carry.
        """
        stored = {s: m for s in self.steps() if isinstance(m := self.manager.metrics(s), dict)}
        names = [self.best] if self.best else []
        names += [n for n in (mn.ACCURACY, mn.MSE, mn.LOSS) if n not in names]
        name = next((n for n in names if any(n in m for m in stored.values())), None)
        if name is None:
            return self.latest_step()
        scored = [(m[name], s) for s, m in stored.items() if name in m]
        best_value, _ = scored[0]
        for value, _ in scored:
            if mn.better(name, value, best_value):
                best_value = value
        return max(s for value, s in scored if value == best_value)  # the newest of equals

    def restore(self, step: int, abstract: Any) -> Any:
        """Restore ``step`` onto ``abstract`` (ShapeDtypeStructs with shardings, or arrays to mirror)."""
        target = jax.tree.map(_as_abstract, abstract)
        return self.manager.restore(int(step), args=ocp.args.StandardRestore(target))

    def restore_numpy(self, step: int | None = None) -> Any:
        """The whole saved tree at ``step`` (default latest) as numpy arrays on this host, any device count."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise NotFound("no checkpoint saved yet")
        meta = self.manager.item_metadata(step)
        dev = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=dev),
            meta,
            is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"),
        )
        tree = self.manager.restore(step, args=ocp.args.StandardRestore(target))
        return jax.tree.map(np.asarray, tree)

    def close(self) -> None:
        """Finish pending saves and release the manager's threads."""
        self.manager.wait_until_finished()
        self.manager.close()

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _as_abstract(x: Any) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))


def load_params(directory: str | Path, checkpoint: str | int = "latest") -> Any:
    """The params of a job's checkpoint (``"latest"``, ``"best"`` or a step) as numpy arrays."""
    with Checkpoints(directory, read_only=True) as ckpts:
        if checkpoint in ("latest", "best"):
            step = ckpts.latest_step() if checkpoint == "latest" else ckpts.best_step()
        else:
            try:
                step = int(checkpoint)
            except (TypeError, ValueError):
                raise InvalidInput(f"checkpoint must be latest, best or a step number, not {checkpoint!r}") from None
        if step is None or step not in ckpts.steps():
            raise NotFound(f"no checkpoint {checkpoint!r}; the steps saved are {ckpts.steps()} (or use latest / best)")
        return ckpts.restore_numpy(step)["params"]
