"""One stop step for every process of a multi-process run (local ``--processes N`` and Ray gangs).

A cancel or a signal must stop every process at the same step: each saves its part of one checkpoint
there, and a process that stopped alone would leave the others waiting in a collective for ever. So
every ``EVERY`` steps process 0 decides "stop here or go on" and writes the decision into
jax.distributed's key-value store (its coordinator runs in process 0); every other process reads that
decision at the same step before going on. Any process may want to stop (its own cancel poll, a signal
sent to it alone): it leaves a request in the store, and process 0 heeds it at its next decision.

No deadlock: process 0 reaches step k having waited only for steps the others have already dispatched
(they dispatch step k before they wait for its decision), and every process runs the same steps from
the same checkpoint, so they count decision steps alike.
"""

from __future__ import annotations

from collections.abc import Callable

EVERY = 8  # steps between decisions: a stop takes effect within this many steps
# JAX's preemption service takes SIGTERM over in every process of a jax.distributed run (and then ignores
# it unless the loop asks multihost_utils); aios handles SIGTERM itself, so its processes set this first.
NO_PREEMPTION_SERVICE = {"JAX_ENABLE_PREEMPTION_SERVICE": "false"}
WAIT_MS = 6 * 3600 * 1000  # the lead may be slow (a large synchronous save); a dead lead fails the read at once
_KEY = "aios/stop"


class AgreedStop:
    """``should_stop`` for the trainer in one process of a jax.distributed run (polled once per step)."""

    def __init__(self, wanted: Callable[[], bool], every: int = EVERY):
        self.wanted, self.every = wanted, every
        self.calls = 0
        self.asked = False

    def __call__(self) -> bool:
        self.calls += 1
        if self.calls % self.every:
            return False
        from jax._src import distributed  # the store jax.distributed.initialize connected (orbax uses it too)

        client, me = distributed.global_state.client, distributed.global_state.process_id
        key = f"{_KEY}/{self.calls}"
        if me == 0:
            stop = bool(self.wanted()) or bool(client.key_value_dir_get(f"{_KEY}/ask/"))
            client.key_value_set(key, "1" if stop else "0")
            return stop
        if not self.asked and self.wanted():
            client.key_value_set(f"{_KEY}/ask/{me}", "1")
            self.asked = True
        return client.blocking_key_value_get(key, WAIT_MS) == "1"


def should_stop(wanted: Callable[[], bool], num_processes: int) -> Callable[[], bool]:
    """The trainer's ``should_stop``: ``wanted`` itself for one process, else the agreed decision."""
    return wanted if num_processes <= 1 else AgreedStop(wanted)


__all__ = ["EVERY", "NO_PREEMPTION_SERVICE", "AgreedStop", "should_stop"]
