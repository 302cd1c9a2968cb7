"""A request as the engine sees it: a :class:`Group` of :class:`Sequence` s (``n`` choices per prompt).

The engine thread writes a sequence's tokens and timings; the event loop that made the group reads its
updates ``(choice index, new text, finish reason)``, handed over in one ``call_soon_threadsafe`` per step.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .params import Sampling

if TYPE_CHECKING:
    from .engine import Engine


class Sequence:
    """One sequence being generated (one choice of a request): prompt, settings, text so far, timings."""

    __slots__ = (
        "group",
        "index",
        "prompt",
        "budget",
        "seed",
        "sampling",
        "stream",
        "slot",
        "arrived",
        "first",
        "last",
        "generated",
        "done",
        "finish",
    )

    def __init__(self, group: Group, index: int, prompt: list[int], budget: int, seed: int, sampling: Sampling, stream):
        self.group, self.index, self.prompt, self.budget, self.seed = group, index, prompt, budget, seed
        self.sampling, self.stream = sampling, stream
        self.slot = -1
        self.arrived = self.first = self.last = 0.0
        self.generated = 0  # tokens sampled (an eos included)
        self.done = False
        self.finish: str | None = None


class Group:
    """The sequences of one request, and the updates ``(index, text, finish_reason)`` the engine hands it,
    read on the event loop that made it."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None):
        self.loop = loop or asyncio.get_running_loop()
        self.seqs: list[Sequence] = []
        self.prompt_tokens = 0
        self.updates: list[tuple[int, str, str | None]] = []
        self.event = asyncio.Event()
        self.cancelled = False
        self.open = 0
        self.engine: Engine | None = None

    def deliver(self, items: list[tuple[int, str, str | None]]) -> None:
        """(Event loop.) New text and finish reasons from the engine."""
        self.updates.extend(items)
        self.open -= sum(1 for _, _, f in items if f)
        self.event.set()

    async def next(self) -> list[tuple[int, str, str | None]]:
        """The updates since the last call (waits for at least one; none once cancelled)."""
        while not self.updates and not self.cancelled:
            self.event.clear()
            await self.event.wait()
        items, self.updates = self.updates, []
        return items

    @property
    def finished(self) -> bool:
        """Every sequence ended and every update was read."""
        return self.open <= 0 and not self.updates

    def cancel(self) -> None:
        """The client went away: the engine frees these sequences' slots at its next step."""
        if self.cancelled or self.open <= 0:
            return
        self.cancelled = True
        self.event.set()
        if self.engine is not None:
            self.engine.cancel()

    @property
    def completion_tokens(self) -> int:
        return sum(len(s.stream.tokens) for s in self.seqs)


def deliver_all(pairs: list[tuple[Group, list]]) -> None:
    """(Event loop.) Hand each group its updates: one call per engine step and event loop."""
    for group, items in pairs:
        group.deliver(items)


__all__ = ["Group", "Sequence", "deliver_all"]
