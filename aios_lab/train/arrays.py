"""In-memory datasets and a loader with the data package's contract, for scripts, tests and benchmarks.

``ArrayLoader.host_batch(step)`` is a pure function of (seed, step): each epoch is a permutation
seeded by (seed, epoch), so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import jax
import numpy as np


@dataclass
class ArrayDataset:
    """Numpy splits with the Dataset fields the trainer reads (task, n_classes, feature_shape, load)."""

    data: dict[str, tuple[np.ndarray, np.ndarray]]
    task: str = "classification"
    n_classes: int | None = None
    name: str = "arrays"
    version: int = 0
    splits: dict[str, int] = field(init=False)

    def __post_init__(self):
        self.splits = {k: len(x) for k, (x, _) in self.data.items()}
        if self.n_classes is None and self.task in ("classification", "lm"):
            self.n_classes = int(max(int(np.max(y)) for _, y in self.data.values() if len(y)) + 1)

    @property
    def feature_shape(self) -> tuple:
        return tuple(next(iter(self.data.values()))[0].shape[1:])

    @property
    def feature_dtype(self) -> np.dtype:
        return next(iter(self.data.values()))[0].dtype

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return self.data[split]


class ArrayLoader:
    """Batches of one split as global jax arrays on ``sharding``; batch k is a pure function of (seed, k)."""

    def __init__(self, ds, split: str, batch_size: int, sharding=None, seed: int = 0, start_step: int = 0):
        self.x, self.y = ds.load(split)
        self.n, self.batch, self.sharding = len(self.x), int(batch_size), sharding
        self.seed, self.start_step = int(seed), int(start_step)
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def indices(self, step: int) -> np.ndarray:
        """Row indices of batch ``step``: positions step*B.. of the concatenated per-epoch permutations."""
        pos = step * self.batch + np.arange(self.batch)
        epochs, offs = np.divmod(pos, self.n)
        if epochs[0] == epochs[-1]:
            return self._perm(int(epochs[0]))[offs]
        return np.concatenate([self._perm(int(e))[offs[epochs == e]] for e in np.unique(epochs)])

    def host_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """The global batch ``step`` as numpy (every process computes the same)."""
        idx = self.indices(step)
        return self.x[idx], self.y[idx]

    def device_batch(self, step: int) -> tuple[jax.Array, jax.Array]:
        """Batch ``step`` laid out on ``sharding`` (each process contributes its own rows)."""
        x, y = self.host_batch(step)
        if self.sharding is None:
            return jax.device_put(x), jax.device_put(y)
        if jax.process_count() > 1:
            p, k = jax.process_index(), jax.process_count()
            rows = slice(p * self.batch // k, (p + 1) * self.batch // k)
            return (
                jax.make_array_from_process_local_data(self.sharding, x[rows]),
                jax.make_array_from_process_local_data(self.sharding, y[rows]),
            )
        return jax.device_put(x, self.sharding), jax.device_put(y, self.sharding)

    def __iter__(self) -> Iterator[tuple[int, jax.Array, jax.Array]]:
        """Yield ``(step, x, y)`` from ``start_step`` on; each batch is built while the previous step runs."""
        step = self.start_step
        while True:
            yield (step, *self.device_batch(step))
            step += 1

    def close(self) -> None:
        self._perms.clear()
