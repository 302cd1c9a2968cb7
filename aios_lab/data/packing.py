"""Token documents -> fixed-size rows of (x, y, mask, segments), packed or padded.

A document of ``n`` tokens gives ``n - 1`` positions: ``x = ids[:-1]``, ``y = ids[1:]``, and
``mask[j] = 1`` when ``y[j]`` is a token to learn (so the loss never counts a prompt or a pad).
Each row has ``block`` positions. Padded (``pack=False``): one document per row, segment 1, the rest
padding. Packed: whole documents placed best-fit-decreasing into rows, numbered 1, 2, ... within
their row (``segments``), so attention can be kept inside a document and positions restart at 0 in
each. Padding is segment 0, mask 0, token ``pad_id``. A document longer than a row is cut to it.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .lm_tokens import Document


@dataclass
class Rows:
    """A split's rows and how they were made."""

    x: np.ndarray  # int32 [rows, block] input tokens
    y: np.ndarray  # int32 [rows, block] next tokens
    mask: np.ndarray  # uint8 [rows, block] 1 where y is learned
    segments: np.ndarray  # int32 [rows, block] document number within the row, 0 = padding

    def extra(self) -> dict[str, np.ndarray]:
        return {"mask": self.mask, "segments": self.segments}


def trim(doc: Document, block: int) -> tuple[Document, bool]:
    """The document cut to at most ``block`` positions (``block + 1`` tokens); and whether it was cut."""
    ids, mask = doc
    if len(ids) <= block + 1:
        return doc, False
    return (ids[: block + 1], mask[: block + 1]), True


def layout(docs: Sequence[Document], block: int, pack: bool) -> list[list[int]]:
    """Which documents go in each row (indices into ``docs``), in row order."""
    if not pack:
        return [[i] for i in range(len(docs))]
    order = sorted(range(len(docs)), key=lambda i: (-len(docs[i][0]), i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (positions left, row), sorted: best fit is the first with enough room
    for i in order:
        need = len(docs[i][0]) - 1
        k = bisect.bisect_left(free, (need, -1))
        if k == len(free):
            rows.append([i])
            bisect.insort(free, (block - need, len(rows) - 1))
        else:
            room, r = free.pop(k)
            rows[r].append(i)
            bisect.insort(free, (room - need, r))
    return rows


def build(docs: Sequence[Document], block: int, pack: bool, pad_id: int) -> Rows:
    """The rows of ``docs`` (each already :func:`trim`-med to ``block``)."""
    plan = layout(docs, block, pack)
    n = len(plan)
    x = np.full((n, block), pad_id, np.int32)
    y = np.full((n, block), pad_id, np.int32)
    mask = np.zeros((n, block), np.uint8)
    segments = np.zeros((n, block), np.int32)
    for r, members in enumerate(plan):
        at = 0
        for s, i in enumerate(members, 1):
            ids, learn = docs[i]
            k = len(ids) - 1
            x[r, at : at + k] = ids[:-1]
            y[r, at : at + k] = ids[1:]
            mask[r, at : at + k] = learn[1:]
            segments[r, at : at + k] = s
            at += k
    return Rows(x, y, mask, segments)


def document_lengths(segments: np.ndarray) -> np.ndarray:
    """Positions per document (every nonzero segment of every row) of a ``segments`` array."""
    seg = np.asarray(segments, np.int64)
    if seg.size == 0:
        return np.zeros(0, np.int64)
    width = int(seg.max()) + 1
    keys = (seg + width * np.arange(len(seg))[:, None]).ravel()
    counts = np.bincount(keys, minlength=width * len(seg)).reshape(len(seg), width)[:, 1:]
    return counts[counts > 0]


__all__ = ["Rows", "trim", "layout", "build", "document_lengths"]
