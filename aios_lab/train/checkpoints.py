"""Orbax checkpoints of the train state: async saves, keep the last few plus the best by an eval metric.

Orbax writes each step to a temporary directory and renames it when complete, so a half-written
checkpoint is never listed. Restores take an abstract target whose leaves carry the shardings wanted.

>>> ckpts = Checkpoints("/tmp/run/checkpoints", keep=3, best="accuracy")
>>> ckpts.save(100, state, metrics={"accuracy": 0.9}); ckpts.wait()
>>> state = ckpts.restore(ckpts.latest_step(), abstract_with_shardings)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

HIGHER_IS_BETTER = {"accuracy": True, "loss": False}


class _QuietExpected(logging.Filter):
    """Orbax warns about what we do on purpose: checkpoints saved on stop or at the end carry no eval
    metrics, and readers (job.params, job.checkpoints) open the manager read-only."""

    EXPECTED = ("did not provide metrics", "read_only=True", "is read only")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.EXPECTED)


logging.getLogger("absl").addFilter(_QuietExpected())


class Checkpoints:
    """An orbax CheckpointManager with the retention policy "latest ``keep`` plus the best by ``best``"."""

    def __init__(
        self,
        directory: str | Path,
        keep: int = 3,
        best: str | None = "accuracy",
        async_save: bool = True,
        read_only: bool = False,
    ):
        self.directory = Path(directory).resolve()
        self.best = best
        higher = HIGHER_IS_BETTER.get(best or "", True)
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
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
        )

    def save(self, step: int, state: Any, metrics: dict | None = None, force: bool = True) -> bool:
        """Start saving ``state`` at ``step`` (async); ``metrics`` (e.g. eval accuracy) rank it for "best"."""
        metrics = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        if self.best and self.best not in metrics:
            metrics = None
        return self.manager.save(int(step), args=ocp.args.StandardSave(state), metrics=metrics, force=force)

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
        """The complete checkpoint with the best ``best`` metric (the latest if none has metrics)."""
        if not self.best:
            return self.latest_step()
        scored = [
            (m[self.best], s) for s in self.steps() if isinstance(m := self.manager.metrics(s), dict) and self.best in m
        ]
        if not scored:
            return self.latest_step()
        sign = 1 if HIGHER_IS_BETTER.get(self.best, True) else -1
        return max(scored, key=lambda t: (sign * t[0], t[1]))[1]

    def restore(self, step: int, abstract: Any) -> Any:
        """Restore ``step`` onto ``abstract`` (ShapeDtypeStructs with shardings, or arrays to mirror)."""
        target = jax.tree.map(_as_abstract, abstract)
        return self.manager.restore(int(step), args=ocp.args.StandardRestore(target))

    def restore_numpy(self, step: int | None = None) -> Any:
        """The whole saved tree at ``step`` (default latest) as numpy arrays on this host, any device count."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
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
        step = {"latest": ckpts.latest_step, "best": ckpts.best_step}.get(checkpoint, lambda: int(checkpoint))()
        if step is None or step not in ckpts.steps():
            raise FileNotFoundError(f"no checkpoint {checkpoint!r} in {directory}; have {ckpts.steps()}")
        return ckpts.restore_numpy(step)["params"]
