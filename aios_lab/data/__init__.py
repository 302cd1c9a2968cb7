"""Datasets on zarr v3 (declare, version by content hash, list, show) and the sharded batch loader.

>>> ds = aios.dataset("digits", "sklearn:digits", split="train=0.8,val=0.1,test=0.1", seed=0)
>>> ds.version, ds.splits, ds.task, ds.n_classes
>>> aios.delete_dataset("digits", 1)
>>> chats = aios.dataset("chats", "jsonl:chats.jsonl", tokenizer="qwen", format="chat", block=256, pack=True)
>>> aios_lab.data.check_tokenizer(chats, aios.registry.load("qwen").tokenizer_sha)
"""

from .dataset import Dataset, dataset, datasets, get
from .delete import delete
from .lm_dataset import check_tokenizer, tokenizer_of

__all__ = ["Dataset", "dataset", "datasets", "get", "delete", "check_tokenizer", "tokenizer_of", "Loader"]


def __getattr__(name: str):
    if name == "Loader":  # the loader imports jax; keep `import aios_lab.data` light
        from .loader import Loader

        return Loader
    raise AttributeError(f"module 'aios_lab.data' has no attribute {name!r}")
