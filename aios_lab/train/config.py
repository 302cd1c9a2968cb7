"""``TrainConfig``: the one place for training defaults, their bounds and the choices each flag takes.

Imports nothing heavy (no JAX), so verbs and forms can read ``CHOICES`` and ``TrainConfig.defaults()``.

Jobs, verbs and the REST face build a config from the flags they were given (``TrainConfig.for_job``),
and show ``TrainConfig.defaults()`` and ``CHOICES``; nothing else states a training default. Every number
is bounded before it reaches JAX (int32 step counters, float32 hyper-parameters) or SQLite.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from ..errors import InvalidInput

# The choices, defined here once (no JAX import, so verbs can show them cheaply); the modules that
# implement them re-export them: optim.OPTIMIZERS, sharding.MODES, step.PRECISIONS, models.TASKS.
OPTIMIZERS = ("adamw", "adam", "sgd")
MODES = ("dp", "fsdp")
PRECISIONS = ("fp32", "bf16")
TASKS = ("classification", "regression", "lm")

FLOAT32_MAX = 3.4e38
BILLION = 1_000_000_000  # steps and intervals stay far below JAX's and orbax's int32 step counters

# LoRA (``--lora r=16,alpha=32,targets=attn``): what each key takes. targets: groups of a decoder layer's
# projections, or the projections themselves, joined by "|"; base: how the frozen base is held on the devices.
LORA_GROUPS = {"attn": ("q", "k", "v", "o"), "mlp": ("gate", "up", "down")}
LORA_GROUPS["all"] = LORA_GROUPS["attn"] + LORA_GROUPS["mlp"]
LORA_BASES = ("float", "int8")
LORA_DEFAULTS = {"r": 16, "alpha": 32.0, "targets": "attn", "base": "float"}
LORA_HELP = "r=16,alpha=32,targets=attn|mlp|all (or projections such as q|v),base=float|int8"

# The values each choice flag takes, for verbs and forms (first = default).
CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": OPTIMIZERS,
    "shard": MODES,
    "precision": PRECISIONS,
    "task": TASKS,
}

# A default checkpoint cadence (every tenth of the run) also waits this long between saves: a short run
# would otherwise spend more on checkpoints than on steps (a save costs tens of ms however short the step).
CHECKPOINT_MIN_S = 30.0

# Bounds of the numeric fields: (low, high, whole number?, low excluded?).
BOUNDS: dict[str, tuple[float, float, bool, bool]] = {
    "n_devices": (1, 4096, True, False),
    "steps": (1, BILLION, True, False),
    "batch": (1, 1 << 24, True, False),
    "lr": (0, FLOAT32_MAX, False, True),
    "checkpoint_every": (1, BILLION, True, False),
    "eval_every": (1, BILLION, True, False),
    "log_every": (1, BILLION, True, False),
    "warmup": (0, BILLION, True, False),
    "seed": (0, 2**32 - 1, True, False),
    "weight_decay": (0, FLOAT32_MAX, False, False),
    "clip": (0, FLOAT32_MAX, False, False),
    "keep": (1, 10_000, True, False),
    "log_interval_s": (0, 86_400, False, False),
    "checkpoint_min_s": (0, 86_400 * 365, False, False),
    "num_processes": (1, 4096, True, False),
    "process_id": (0, 4095, True, False),
    "dataset_version": (1, 2**31 - 1, True, False),
}
# None allowed (see TrainConfig)
OPTIONAL = ("dataset_version", "checkpoint_every", "checkpoint_min_s", "eval_every", "warmup")
FLAGS = {"n_devices": "devices", "num_processes": "processes"}  # fields whose flag has another name


@dataclass
class TrainConfig:
    """Everything a training run needs, JSON round-trippable so a worker process can rebuild it.

    ``None`` in ``checkpoint_every``, ``eval_every`` and ``warmup`` means "follow the run's length"
    (``validate`` fills them in); ``clip`` 0 or None turns gradient clipping off.
    """

    dataset: str = ""
    dataset_version: int | None = None
    model: Any = "mlp"  # a model name/target or a resolved spec dict (see models.resolve)
    n_devices: int = 1
    steps: int = 500
    batch: int = 128
    lr: float = 1e-3
    optimizer: str = "adamw"
    shard: str = "dp"
    precision: str = "fp32"
    checkpoint_every: int | None = None  # max(10, steps // 10)
    # at least this many seconds between checkpoints before the last (None: CHECKPOINT_MIN_S when
    # checkpoint_every follows the run's length, 0 when it was given; one process only, see the trainer)
    checkpoint_min_s: float | None = None
    eval_every: int | None = None  # max(10, steps // 10)
    seed: int = 0
    task: str | None = None
    warmup: int | None = None  # min(100, steps // 10)
    weight_decay: float = 1e-4
    clip: float | None = 1.0
    log_every: int = 10
    log_interval_s: float = 0.5  # at most about one train metrics row per this many seconds
    keep: int = 3
    coordinator: str | None = None  # jax.distributed: "host:port", process count and this process's id
    num_processes: int = 1
    process_id: int = 0
    lora: dict | None = None  # low-rank adapters only (``parse_lora``): {"r", "alpha", "targets", "base"}
    remat: bool = False  # recompute each layer's activations in the backward pass (less memory, more compute)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default (None where the value follows ``steps``; see ``derived``)."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @staticmethod
    def derived(steps: int) -> dict[str, int]:
        """The defaults that follow the run's length: checkpoints and evals every tenth, warm-up up to 100."""
        return {
            "checkpoint_every": max(10, steps // 10),
            "eval_every": max(10, steps // 10),
            "warmup": min(100, steps // 10),
        }

    @classmethod
    def for_job(cls, **flags: Any) -> TrainConfig:
        """A validated config from the flags given; a flag left out or given as None keeps its default."""
        unknown = set(flags) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InvalidInput(f"unknown training option {', '.join(sorted(unknown))}")
        return cls(**{k: v for k, v in flags.items() if v is not None or k == "clip"}).validate()

    def to_json(self) -> str:
        """The config as a JSON object string."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> TrainConfig:
        """A config from ``to_json``'s output (unknown keys are refused, missing ones take defaults)."""
        data = json.loads(text) if isinstance(text, str) else dict(text)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InvalidInput(f"unknown train config keys: {', '.join(sorted(unknown))}")
        return cls(**data)

    def validate(self) -> TrainConfig:
        """Refuse impossible settings with a one-line InvalidInput before anything runs; fill in the
        length-derived defaults and turn whole floats (``1e4``) into ints. Returns ``self``."""
        if self.clip is None:
            self.clip = 0.0
        for name, bound in BOUNDS.items():
            value = getattr(self, name)
            if value is not None or name not in OPTIONAL:
                setattr(self, name, _bounded(name, value, *bound))
        if self.checkpoint_min_s is None:  # before the cadence is filled in: was it given?
            self.checkpoint_min_s = 0.0 if self.checkpoint_every is not None else CHECKPOINT_MIN_S
        for name, value in self.derived(self.steps).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        for name, choices in CHOICES.items():
            value = getattr(self, name)
            if not (value is None and name == "task") and value not in choices:
                raise InvalidInput(f"--{name} must be one of {', '.join(choices)}, not {value!r}")
        if self.batch % self.n_devices:
            raise InvalidInput(
                f"--batch {self.batch} is not divisible by the {self.n_devices} data-parallel devices; "
                f"use a multiple of {self.n_devices}"
            )
        if self.lora is not None:
            self.lora = parse_lora(self.lora)
        if not isinstance(self.remat, bool):
            raise InvalidInput(f"--remat is a switch (true or false), not {self.remat!r}")
        if self.process_id >= self.num_processes:
            raise InvalidInput(f"process id {self.process_id} is not below the {self.num_processes} processes")
        return self


def parse_lora(value: str | dict) -> dict:
    """``"r=16,alpha=32,targets=attn"`` (or such a dict) -> ``{"r", "alpha", "targets", "base"}``, defaults
    filled in; a one-line InvalidInput naming the bad key otherwise. Targets stay names here: whether they
    match a layer of the model is checked against its architecture (``train.lora.targets``)."""
    if isinstance(value, str):
        pairs = {}
        for part in filter(None, (p.strip() for p in value.split(","))):
            key, sep, text = part.partition("=")
            if not sep:
                raise InvalidInput(f"--lora takes KEY=VALUE pairs separated by commas ({LORA_HELP}), not {part!r}")
            pairs[key.strip()] = text.strip()
        value = pairs
    if not isinstance(value, dict):
        raise InvalidInput(f"--lora takes {LORA_HELP}, not {value!r}")
    unknown = sorted(set(value) - set(LORA_DEFAULTS))
    if unknown:
        raise InvalidInput(f"--lora has no key {unknown[0]!r}; it takes {LORA_HELP}")
    out = {**LORA_DEFAULTS, **value}
    out["r"] = _bounded("lora r", out["r"], 1, 65_536, True, False)
    out["alpha"] = _bounded("lora alpha", out["alpha"], 0, FLOAT32_MAX, False, True)
    names = [t.strip() for t in str(out["targets"]).split("|") if t.strip()]
    known = (*LORA_GROUPS, *LORA_GROUPS["all"])
    bad = [t for t in names if t not in known]
    if not names or bad:
        raise InvalidInput(
            f"--lora targets={out['targets']!r}: use {', '.join(LORA_GROUPS)} or projections "
            f"({', '.join(LORA_GROUPS['all'])}) joined by |"
        )
    out["targets"] = "|".join(dict.fromkeys(names))
    if out["base"] not in LORA_BASES:
        raise InvalidInput(f"--lora base={out['base']!r}: use one of {', '.join(LORA_BASES)}")
    return out


def _bounded(name: str, value: Any, lo: float, hi: float, whole: bool, above: bool) -> int | float:
    """``value`` (a number or its text) as an int (whole) or a float within the bounds, else a one-line
    InvalidInput naming the flag."""
    number = None
    if isinstance(value, str):  # a flag's or a form's text
        for read in (int, float):
            try:
                return _bounded(name, read(value.strip()), lo, hi, whole, above)
            except (ValueError, OverflowError):
                continue
    elif isinstance(value, Real) and not isinstance(value, bool):
        number = int(value) if isinstance(value, Integral) else float(value)
        if isinstance(number, float) and not math.isfinite(number):
            number = None
        elif whole and isinstance(number, float):
            number = int(number) if number.is_integer() else None
    if number is None or not (number > lo if above else number >= lo) or number > hi:
        kind = "a whole number" if whole else "a number"
        span = f"above {_show(lo)} up to {_show(hi)}" if above else f"from {_show(lo)} to {_show(hi)}"
        raise InvalidInput(f"--{FLAGS.get(name, name).replace('_', '-')} must be {kind} {span}, not {_show(value)}")
    return number if whole else float(number)


def _show(x: Any) -> str:
    """A number as people write it: 1,000,000 or 1e+20 (anything else as its repr)."""
    if isinstance(x, bool) or not isinstance(x, Real):
        return repr(x)
    try:
        if abs(x) < 1e15 and float(x).is_integer():
            return f"{int(x):,}"
        return f"{float(x):.6g}"
    except OverflowError:
        return f"a {len(str(abs(int(x))))}-digit number"


__all__ = [
    "TrainConfig",
    "CHOICES",
    "BOUNDS",
    "OPTIMIZERS",
    "MODES",
    "PRECISIONS",
    "TASKS",
    "LORA_GROUPS",
    "LORA_HELP",
    "parse_lora",
]
