"""A step-time breakdown from a ``jax.profiler`` trace (the ``.xplane.pb`` it writes), read with JAX's own
parser (``jax.profiler.ProfileData``).

Per step, on average over the traced steps:

- ``compute``: time the devices spend in XLA operations other than collectives (the union of their intervals,
  per device, averaged over devices); on GPU/TPU the device planes' ``XLA Ops`` line, on CPU the host
  threads' events that carry an ``hlo_op``;
- ``collectives``: the same for all-reduce, all-gather, reduce-scatter, all-to-all, collective-permute
  (waiting for the other devices included: that is what a straggler costs);
- ``input``: the training loop getting its next batch (the trainer's ``INPUT_SPAN`` annotation);
- ``checkpoint``: the loop saving or handing over a checkpoint (``CHECKPOINT_SPAN``);
- ``other``: the rest of the step (host work, dispatch, idle devices).

Steps are counted by the input spans (one per step); their spacing is the step time. With asynchronous dispatch
the host and the devices overlap, so the parts can add up to more than the step: ``other`` is what none of
them explains, never negative.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from .errors import AiosError

PARTS = ("compute", "collectives", "input", "checkpoint", "other")
LABELS = {
    "compute": "compute",
    "collectives": "collectives",
    "input": "host/input wait",
    "checkpoint": "checkpoint",
    "other": "other (host, idle)",
}
COLORS = {"compute": "#1f77b4", "collectives": "#ff7f0e", "input": "#d62728", "checkpoint": "#9467bd", "other": "#bbb"}
COLLECTIVE = re.compile(r"all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute|collective-broadcast")


def _union(intervals: list[tuple[int, int]]) -> int:
    """Nanoseconds covered by the intervals (overlaps counted once)."""
    total, end = 0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def trace_file(trace_dir: str | Path) -> Path:
    found = sorted(Path(trace_dir).glob("plugins/profile/*/*.xplane.pb"))
    if not found:
        raise AiosError(f"no trace was written under {trace_dir}; the profiler may not be available here")
    return found[-1]


def breakdown(trace_dir: str | Path, steps: int) -> dict[str, Any]:
    """The step-time breakdown of the trace under ``trace_dir`` (``steps``: how many the worker traced)."""
    from jax.profiler import ProfileData

    from .train.saving import CHECKPOINT_SPAN
    from .train.trainer import INPUT_SPAN

    path = trace_file(trace_dir)
    data = ProfileData.from_file(str(path))
    inputs, saves = [], []
    ops: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for plane in data.planes:
        on_device = plane.name.startswith("/device:")
        for line in plane.lines:
            op_line = on_device and line.name == "XLA Ops"
            xla_thread = not on_device and line.name.startswith("tf_XLA")
            for ev in line.events:
                name = ev.name
                if name == INPUT_SPAN:
                    inputs.append((ev.start_ns, ev.end_ns))
                elif name == CHECKPOINT_SPAN:
                    saves.append((ev.start_ns, ev.end_ns))
                elif op_line:
                    ops[plane.name].append((int(ev.start_ns), int(ev.end_ns), name))
                elif xla_thread:
                    stats = dict(ev.stats)
                    if "hlo_op" in stats:
                        ops[str(stats.get("device_ordinal", line.name))].append(
                            (int(ev.start_ns), int(ev.end_ns), name)
                        )
    n = len(inputs) or steps
    starts = sorted(a for a, _ in inputs)
    if len(starts) >= 2:
        step_ns = (starts[-1] - starts[0]) / (len(starts) - 1)
    else:
        every = [a for evs in ops.values() for a, _, _ in evs] + [b for evs in ops.values() for _, b, _ in evs]
        step_ns = (max(every) - min(every)) / max(1, steps) if every else 0.0
    per_op: dict[str, int] = defaultdict(int)
    compute = collectives = 0.0
    for evs in ops.values():
        compute += _union([(a, b) for a, b, name in evs if not COLLECTIVE.search(name)])
        collectives += _union([(a, b) for a, b, name in evs if COLLECTIVE.search(name)])
        for a, b, name in evs:
            per_op[name] += b - a
    devices = max(1, len(ops))
    ns = {
        "compute": compute / devices / n,
        "collectives": collectives / devices / n,
        "input": sum(b - a for a, b in inputs) / n,
        "checkpoint": sum(b - a for a, b in saves) / n,
    }
    ns["other"] = max(0.0, step_ns - sum(ns.values()))
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:10]
    return {
        "steps": n,
        "step_ms": step_ns / 1e6,
        "ms_per_step": {k: v / 1e6 for k, v in ns.items()},
        "fractions": {k: (v / step_ns if step_ns else 0.0) for k, v in ns.items()},
        "devices": len(ops),
        "top_ops": [
            {"name": k, "ms_per_step": v / devices / n / 1e6, "collective": bool(COLLECTIVE.search(k))} for k, v in top
        ],
        "trace_file": path.name,
    }


__all__ = ["PARTS", "LABELS", "COLORS", "COLLECTIVE", "breakdown", "trace_file"]
