"""Tokens in, text out: incremental detokenisation with stop strings, for one request.

Text grows only by what is certain: tokens that end half-way through a UTF-8 character wait for the
rest, and a tail that could still become a stop string is held back until it cannot. A request ends
at an eos id, at its first stop string (excluded from the text), or at its token budget. A batch
generator and a serving engine both keep one TextStream per request.

>>> ts = TextStream(tokenizer, stops=("\\n\\n",), budget=64, eos={2})
>>> delta = ts.add(token)          # the newly visible text ("" while holding back)
>>> ts.finish                      # None, "stop" or "length"
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class TextStream:
    """One request's tokens and the text they spell so far (see the module docstring)."""

    def __init__(self, tokenizer: Any, stops: Iterable[str] = (), budget: int | None = None, eos: Iterable[int] = ()):
        self.tokenizer = tokenizer
        self.stops = tuple(s for s in stops if s)
        self.budget = budget
        self.eos = set(eos)
        self.tokens: list[int] = []
        self.text = ""  # certain text (cut at a stop string once one appears)
        self.sent = 0  # characters of ``text`` already handed out
        self.finish: str | None = None  # "stop" | "length"
        self._prefix = 0  # tokens before this are spelled out in ``text``...
        self._read = 0  # ...and those up to here were decoded last time

    def add(self, token: int) -> str:
        """Take one sampled token; returns the text it makes safe to show (the rest of it when it ends)."""
        if self.finish:
            return ""
        if token in self.eos:
            self.finish = "stop"
        else:
            self.tokens.append(int(token))
            if self.budget is not None and len(self.tokens) >= self.budget:
                self.finish = "length"
        return self._advance()

    def close(self, reason: str = "length") -> str:
        """End the request now (cancelled, out of room): the text still held back."""
        if not self.finish:
            self.finish = reason
        return self._advance()

    def _advance(self) -> str:
        self._detokenise(final=self.finish is not None)
        end = len(self.text) if self.finish else _safe_end(self.text, self.stops)
        if self.stops:
            start = max(0, self.sent - max(map(len, self.stops)))
            hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
            if hits:
                self.finish, end = "stop", min(hits)
                self.text = self.text[:end]
        delta = self.text[self.sent : end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return delta

    def _detokenise(self, final: bool) -> None:
        """Extend ``text`` by what the new tokens spell beyond the previous window (``final``: even half a char)."""
        before = self.tokenizer.decode(self.tokens[self._prefix : self._read])
        after = self.tokenizer.decode(self.tokens[self._prefix :])
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self.tokens)


def _safe_end(text: str, stops: tuple[str, ...]) -> int:
    """How much of ``text`` can be shown: not a trailing U+FFFD nor a trailing prefix of a stop string."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, end), 0, -1):
            if text[end - k : end] == s[:k]:
                hold = max(hold, k)
                break
    return end - hold


__all__ = ["TextStream"]
