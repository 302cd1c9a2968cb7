"""A tokenized language-model dataset as the trainer reads it: segment ids beside the tokens, the loss mask in
the labels.

A dataset made from jsonl with a model's tokenizer holds ``x``, ``y``, ``mask`` and ``segments`` per split
(see ``data.lm_dataset``). The train step takes ``(x, y)`` batches, so :func:`view` presents such a dataset
with rows ``x = [tokens; segments]`` (``[2, block]`` int32) and ``y`` = the next tokens with
:data:`IGNORE` where the mask says the token is not learned. The arrays are views over the zarr arrays (read
chunk by chunk as the loader asks), so the data package's loader, its order and its sharding work unchanged.

>>> ds = view(aios.data.get("chats"))
>>> ds.feature_shape
(2, 128)
"""

from __future__ import annotations

from typing import Any

import numpy as np

IGNORE = -1  # a label the loss and the accuracy skip


def has_masks(ds: Any) -> bool:
    """Does ``ds`` carry a loss mask and segment ids (a dataset tokenized with a model's tokenizer)?"""
    extra = getattr(ds, "extra", None) or {}
    return "mask" in extra and "segments" in extra


def view(ds: Any) -> Any:
    """``ds`` as the trainer reads it: an :class:`LMView` for a tokenized language-model dataset, else itself."""
    return LMView(ds) if has_masks(ds) and not isinstance(ds, LMView) else ds


def tokens_and_segments(x: Any) -> tuple[Any, Any]:
    """``(tokens [B, T], segment ids [B, T] or None)`` from a batch of ``[B, 2, T]`` rows or plain ``[B, T]`` tokens."""
    if x.ndim == 3:
        return x[:, 0], x[:, 1]
    return x, None


class _Rows:
    """Rows of several aligned zarr arrays read together and combined (sliced like an array: ``a[i:j]``,
    ``a[...]``), with the shape, dtype and chunking the loader asks for."""

    def __init__(self, combine: Any, shape: tuple, *arrays: Any):
        self.arrays, self.combine = arrays, combine
        self.shape, self.dtype = shape, np.dtype(np.int32)
        self.chunks = (int(arrays[0].chunks[0]), *shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        return self.combine(*(np.asarray(a[index]) for a in self.arrays))


def _stack(x: np.ndarray, segments: np.ndarray) -> np.ndarray:
    return np.stack([x.astype(np.int32), segments.astype(np.int32)], axis=-2)


def _labels(y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask > 0, y, IGNORE).astype(np.int32)


class LMView:
    """A tokenized dataset with ``arrays(split) -> (x [n, 2, T], y [n, T])`` as described above; every other
    attribute is the dataset's own."""

    def __init__(self, ds: Any):
        self.ds = ds

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ds, name)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return (2, *tuple(self.ds.feature_shape))

    @property
    def feature_dtype(self) -> str:
        return "int32"

    def arrays(self, split: str = "train") -> tuple[_Rows, _Rows]:
        x, y = self.ds.arrays(split)
        extra = self.ds.extra_arrays(split)
        n, t = x.shape
        return (
            _Rows(_stack, (n, 2, t), x, extra["segments"]),
            _Rows(_labels, (n, t), y, extra["mask"]),
        )

    def load(self, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        x, y = self.arrays(split)
        return x[...], y[...]

    def __repr__(self) -> str:
        return f"LMView({self.ds!r})"


__all__ = ["IGNORE", "LMView", "view", "has_masks", "tokens_and_segments"]
