"""Continuous batching for one language-model version: a fixed set of KV-cache slots, decoded together.

One engine thread per version does all the device work, so the event loop (health checks, V2 routes,
streaming) never waits behind a decode step. Its loop::

    while serving:
        free the slots of cancelled sequences (the client went away)
        admit waiting sequences into free slots: prefill each prompt alone into its slot (batch 1,
            padded to its length bucket) and write its row of the decode state (logits, position,
            token budget, seed, temperature, top-p, top-k)
        dispatch lm.decode_loop over ALL slots for k steps (rows without a live sequence masked off)
        read the tokens sampled (with asynchronous dispatch: the previous call's, while this one runs),
            turn them into text per sequence (TextStream: stop strings, UTF-8), hand every request its
            deltas in one call onto the event loop, and free the slot of each sequence that finished

A row's arithmetic never depends on the other rows (fixed shapes, per-row masks and per-row PRNG keys
from the sequence's own seed and token index), and a prompt is always prefilled alone at its own
bucket, so a request decodes to the same tokens alone or among 15 others, whenever it joins.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence as Seq
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ... import lm
from ...lm.decode import DecodeState, bucket
from ...lm.textstream import TextStream
from ..errors import Overloaded
from .errors import BadParam, Retired
from .group import Group, Sequence, deliver_all
from .metrics import EngineStats
from .model import LMModel
from .params import Sampling

log = logging.getLogger("aios_lab.serve")

WARM_PREFILL = 512  # prompt buckets up to this many tokens are compiled before a version takes traffic


@partial(jax.jit, donate_argnums=0)
def _admit(state: DecodeState, slot, logits, position, budget, seed, temperature, top_p, top_k) -> DecodeState:
    """Row ``slot`` of the decode state set for a sequence just prefilled (logits ``[1, V]``)."""
    return DecodeState(
        logits=state.logits.at[slot].set(logits[0].astype(state.logits.dtype)),
        positions=state.positions.at[slot].set(position),
        active=state.active.at[slot].set(True),
        steps=state.steps.at[slot].set(0),
        budget=state.budget.at[slot].set(budget),
        seeds=state.seeds.at[slot].set(seed),
        temperature=state.temperature.at[slot].set(temperature),
        top_p=state.top_p.at[slot].set(top_p),
        top_k=state.top_k.at[slot].set(top_k),
    )


def _empty_state(slots: int, vocab: int, dtype: Any) -> DecodeState:
    return DecodeState(
        logits=jnp.zeros((slots, vocab), dtype),
        positions=jnp.zeros(slots, jnp.int32),
        active=jnp.zeros(slots, bool),
        steps=jnp.zeros(slots, jnp.int32),
        budget=jnp.zeros(slots, jnp.int32),
        seeds=jnp.zeros(slots, jnp.uint32),
        temperature=jnp.zeros(slots, jnp.float32),
        top_p=jnp.ones(slots, jnp.float32),
        top_k=jnp.zeros(slots, jnp.int32),
    )


def prefill_widths(max_len: int) -> list[int]:
    """The prompt buckets compiled at load: 16, 32, ... up to :data:`WARM_PREFILL` (capped at ``max_len``)."""
    out, w = [], 16
    while w < 2 * min(max_len, WARM_PREFILL):
        out.append(min(w, max_len))
        w *= 2
    return sorted(set(out))


class Engine:
    """Continuous batching over ``slots`` KV-cache slots of ``max_len`` tokens for one :class:`LMModel`.

    ``submit`` (event loop) queues a :class:`Group`; ``retire`` finishes what was submitted, then stops
    (hot swap, unload); ``stop`` ends at once (shutdown). See the module docstring for the loop."""

    def __init__(
        self,
        model: LMModel,
        *,
        slots: int = 16,
        max_len: int = 2048,
        max_waiting: int = 256,
        steps_per_call: int = 0,
        stats: EngineStats | None = None,
    ):
        self.model, self.cfg = model, model.cfg
        self.slots = int(slots)
        self.max_len = int(min(max_len, self.cfg.context))
        self.max_waiting = int(max_waiting)
        cpu = jax.default_backend() == "cpu"
        self.steps = int(steps_per_call) or (1 if cpu else 8)
        # With synchronous dispatch (this server's CPU setting) nothing overlaps: read each call's tokens at once.
        self.pipelined = not cpu or bool(getattr(jax.config, "jax_cpu_enable_async_dispatch", True))
        self.stats = stats or EngineStats(None, model.name, str(model.version))
        self.params = jax.device_put(model.params)
        eos = list(model.eos_ids)
        self.eos = jnp.asarray(np.array(eos + [-2] * (max(8, -(-len(eos) // 8) * 8) - len(eos)), np.int32))
        self.eos_set = set(eos)
        self.owners: list[Sequence | None] = [None] * self.slots
        self.running = 0  # slots in use (written by the engine thread only)
        self.waiting: deque[Sequence] = deque()
        self.retiring = self.stopped = False
        self.on_stop: Callable[[Engine], None] | None = None
        self.cache: Any = None
        self.state: DecodeState | None = None
        self._cv = threading.Condition()
        self._reap = False
        self._thread: threading.Thread | None = None

    # -- set-up ---------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Allocate the cache and compile, before any route points here, the decode step and the prefill of
        every prompt bucket up to :data:`WARM_PREFILL` tokens (a longer prompt's bucket compiles on first use)."""
        self.cache = lm.cache_for(self.params, self.cfg, self.slots, self.max_len)
        logits = None
        for width in prefill_widths(self.max_len):
            self.cache, logits = lm.prefill(
                self.params,
                self.cfg,
                self.cache,
                np.zeros((1, width), np.int32),
                np.ones(1, np.int32),
                np.zeros(1, np.int32),
            )
        state = _empty_state(self.slots, logits.shape[-1], logits.dtype)
        state = _admit(state, *self._row(0, logits, 1, 1, 0, Sampling(temperature=0.0)))
        off = np.zeros(self.slots, bool)  # compiles the loop; every row switched off, nothing runs
        self.cache, self.state, out = lm.decode_loop(
            self.params, self.cfg, self.cache, state, self.eos, self.steps, True, off
        )
        np.asarray(out)

    def start(self) -> None:
        if self.cache is None:
            self.warm_up()
        m = self.model
        self._thread = threading.Thread(target=self._run, name=f"aios-llm-{m.name}-v{m.version}", daemon=True)
        self._thread.start()

    # -- the event loop's side ------------------------------------------------------------------
    @property
    def waiting_count(self) -> int:
        return len(self.waiting)

    def budget(self, prompt_tokens: int, max_tokens: int | None, what: str = "prompt") -> int:
        """The token budget of a prompt: ``max_tokens``, or the rest of the context; 400 saying the limit when
        they do not fit together."""
        room = self.max_len - prompt_tokens
        if room < 1:
            raise BadParam(
                f"the {what} has {prompt_tokens} tokens but this model's context here is {self.max_len} tokens "
                "(prompt and completion together): shorten it",
                "messages" if what == "chat" else "prompt",
            )
        if max_tokens is None:
            return room
        if max_tokens > room:
            raise BadParam(
                f"the {what} has {prompt_tokens} tokens and max_tokens is {max_tokens}: {prompt_tokens + max_tokens} "
                f"is over this model's context of {self.max_len} tokens; ask for at most {room} tokens or shorten it",
                "max_tokens",
            )
        return max_tokens

    def group(self, prompts: Seq[list[int]], sampling: Sampling, what: str = "prompt") -> Group:
        """A :class:`Group` of ``sampling.n`` sequences per prompt (choice index ``prompt * n + j``)."""
        g = Group()
        vocab = self.cfg.vocab_size
        rng = np.random.default_rng() if sampling.seed is None else None
        for p, ids in enumerate(prompts):
            if not ids:
                raise BadParam(f"{what} {p} encodes to no tokens; give some text", "prompt")
            if max(ids) >= vocab or min(ids) < 0:
                raise BadParam(f"{what} {p} holds token ids outside this model's vocabulary of {vocab}", "prompt")
            budget = self.budget(len(ids), sampling.max_tokens, what)
            g.prompt_tokens += len(ids)
            for j in range(sampling.n):
                seed = int(rng.integers(2**32)) if rng is not None else (sampling.seed + j) & 0xFFFFFFFF
                ts = TextStream(self.model.tokenizer, sampling.stop, budget, self.eos_set)
                g.seqs.append(Sequence(g, p * sampling.n + j, list(ids), budget, seed, sampling, ts))
        g.open = len(g.seqs)
        return g

    def submit(self, group: Group) -> None:
        """Queue ``group``'s sequences: 429 when the slots are busy and the wait queue is full,
        :class:`Retired` once this version no longer takes work."""
        with self._cv:
            if self.retiring or self.stopped:
                raise Retired()
            free = max(0, self.slots - self.running - len(self.waiting))
            if len(self.waiting) + len(group.seqs) - free > self.max_waiting:
                m = self.model
                raise Overloaded(
                    f"{m.name} v{m.version} is busy: all {self.slots} slots are generating and "
                    f"{len(self.waiting)} sequences are waiting; retry in a moment",
                    reason="llm_queue_full",
                )
            now = time.perf_counter()
            for s in group.seqs:
                s.arrived = now
            group.engine = self
            self.waiting.extend(group.seqs)
            self._cv.notify()

    def cancel(self) -> None:
        """Some group was cancelled: free its slots at the next step."""
        with self._cv:
            self._reap = True
            self._cv.notify()

    def retire(self) -> None:
        """Take no new work; finish what was submitted, then stop and free the cache."""
        with self._cv:
            self.retiring = True
            self._cv.notify()
        if self._thread is None:
            self._cleanup()

    def stop(self, timeout: float = 10.0) -> None:
        """End now: sequences still generating end with finish reason ``abort``."""
        with self._cv:
            self.stopped = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self._cleanup()

    # -- the engine thread ----------------------------------------------------------------------
    def _run(self) -> None:
        pending = None
        try:
            while True:
                with self._cv:
                    if self.stopped:
                        break
                    if self._reap:
                        self._reap_cancelled()
                    if self.running == 0 and not self.waiting and pending is None:
                        if self.retiring:
                            break
                        self._cv.wait()
                        continue
                try:
                    self._admit_waiting()
                    call = self._dispatch() if self.running else None
                    if self.pipelined:
                        call, pending = pending, call
                    if call is not None:
                        self._process(*call)
                except Exception as exc:
                    log.exception("%s v%s: the engine step failed", self.model.name, self.model.version)
                    pending = None
                    self._fail_all(f"generation failed: {type(exc).__name__}: {exc}")
        finally:
            self._abort_all()
            self._cleanup()

    def _row(self, slot: int, logits, position: int, budget: int, seed: int, s: Sampling) -> tuple:
        return (
            np.int32(slot),
            logits,
            np.int32(position),
            np.int32(budget),
            np.uint32(seed),
            np.float32(s.temperature),
            np.float32(s.top_p),
            np.int32(s.top_k),
        )

    def _admit_waiting(self) -> None:
        while self.running < self.slots:
            with self._cv:
                if not self.waiting:
                    return
                seq = self.waiting.popleft()
            if seq.group.cancelled:
                seq.done, seq.finish = True, "abort"
                continue
            slot = self.owners.index(None)
            n = len(seq.prompt)
            tokens = np.zeros((1, min(bucket(n), self.max_len)), np.int32)
            tokens[0, :n] = seq.prompt
            self.cache, logits = lm.prefill(
                self.params, self.cfg, self.cache, tokens, np.array([n], np.int32), np.array([slot], np.int32)
            )
            self.state = _admit(self.state, *self._row(slot, logits, n, seq.budget, seq.seed, seq.sampling))
            seq.slot = slot
            self.owners[slot] = seq
            self.running += 1
            self.stats.admitted(n, time.perf_counter() - seq.arrived)

    def _dispatch(self) -> tuple[Any, tuple[Sequence | None, ...]]:
        allow = np.fromiter((s is not None and not s.done for s in self.owners), bool, self.slots)
        self.cache, self.state, out = lm.decode_loop(
            self.params, self.cfg, self.cache, self.state, self.eos, self.steps, True, allow
        )
        return out, tuple(self.owners)

    def _process(self, out: Any, owners: tuple[Sequence | None, ...]) -> None:
        tokens = np.asarray(out)
        now = time.perf_counter()
        updates: dict[Group, list] = {}
        total = 0
        for slot, seq in enumerate(owners):
            if seq is None or seq.done:
                continue
            parts, got = [], 0
            for t in tokens[slot]:
                if t < 0:
                    break
                got += 1
                parts.append(seq.stream.add(int(t)))
                if seq.stream.finish:
                    break
            if got == 0:  # the device ended the row (it never does before the host does): end it cleanly
                parts.append(seq.stream.close("length"))
            total += got
            self._timing(seq, got, now)
            text, finish = "".join(parts), seq.stream.finish
            if finish:
                self._release(seq, finish, now)
            if text or finish:
                updates.setdefault(seq.group, []).append((seq.index, text, finish))
        self.stats.tokens(total)
        self._deliver(updates)

    def _timing(self, seq: Sequence, got: int, now: float) -> None:
        if not got:
            return
        seq.generated += got
        if not seq.first:
            seq.first = now
            self.stats.first_token(now - seq.arrived)
        else:
            self.stats.inter_token((now - seq.last) / got)
        seq.last = now

    def _release(self, seq: Sequence, finish: str, now: float) -> None:
        seq.done, seq.finish = True, finish
        if 0 <= seq.slot < self.slots and self.owners[seq.slot] is seq:
            self.owners[seq.slot] = None
            self.running -= 1
        tpot = (seq.last - seq.first) / (seq.generated - 1) if seq.generated > 1 else None
        self.stats.finished(finish, now - seq.arrived, tpot)

    def _reap_cancelled(self) -> None:
        """(Holding the lock.) Free the slots and queue places of cancelled groups."""
        self._reap = False
        now = time.perf_counter()
        if any(s.group.cancelled for s in self.waiting):
            for s in self.waiting:
                if s.group.cancelled:
                    s.done, s.finish = True, "abort"
                    self.stats.finished("abort", now - s.arrived, None)
            self.waiting = deque(s for s in self.waiting if not s.group.cancelled)
        for seq in self.owners:
            if seq is not None and seq.group.cancelled and not seq.done:
                self._release(seq, "abort", now)

    def _deliver(self, updates: dict[Group, list]) -> None:
        by_loop: dict[Any, list] = {}
        for g, items in updates.items():
            if not g.cancelled:
                by_loop.setdefault(g.loop, []).append((g, items))
        for loop, pairs in by_loop.items():
            try:
                loop.call_soon_threadsafe(deliver_all, pairs)
            except RuntimeError:  # that event loop is closed: nobody is waiting any more
                pass

    def _end_everything(self, reason: str) -> None:
        now = time.perf_counter()
        updates: dict[Group, list] = {}
        with self._cv:
            waiting, self.waiting = list(self.waiting), deque()
        for seq in [s for s in self.owners if s is not None] + waiting:
            if seq.done:
                continue
            self._release(seq, reason, now)
            updates.setdefault(seq.group, []).append((seq.index, "", reason))
        self._deliver(updates)

    def _fail_all(self, message: str) -> None:
        """A step failed: every sequence ends with an error and the cache starts afresh."""
        log.warning("%s v%s: %s", self.model.name, self.model.version, message)
        self._end_everything("error")
        self.owners = [None] * self.slots
        self.running = 0
        self.cache = None
        self.warm_up()

    def _abort_all(self) -> None:
        self._end_everything("abort")

    def _cleanup(self) -> None:
        self.cache = self.state = None
        if self.on_stop is not None:
            self.on_stop(self)
            self.on_stop = None


__all__ = ["Engine", "Group", "Sequence", "prefill_widths"]
