"""Datasets on zarr v3 (declare, version by content hash, list, show) and the sharded batch loader.

>>> ds = aios.dataset("digits", "sklearn:digits", split="train=0.8,val=0.1,test=0.1", seed=0)
>>> ds.version, ds.splits, ds.task, ds.n_classes
"""

from .dataset import Dataset, dataset, datasets, get

__all__ = ["Dataset", "dataset", "datasets", "get", "Loader"]


def __getattr__(name: str):
    if name == "Loader":  # the loader imports jax; keep `import aios_lab.data` light
        from .loader import Loader

        return Loader
    raise AttributeError(f"module 'aios_lab.data' has no attribute {name!r}")
