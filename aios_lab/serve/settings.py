"""Every serving default, in one place: the CLI flags, ``%aios serve``, ``aios.serve(...)`` and the app read them.

>>> s = ServeSettings(port=8600, max_rows=4096)
>>> s.to_argv()                        # the flags of ``python -m aios_lab.serve``
>>> ServeSettings.from_args(parser.parse_args(argv))
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..errors import InvalidInput


def _opt(default: Any, help: str, low: float | None = None, high: float | None = None) -> Any:
    return field(default=default, metadata={"help": help, "low": low, "high": high})


@dataclass(frozen=True)
class ServeSettings:
    """How one endpoint serves: address, batching, limits, timeouts and background intervals."""

    port: int = _opt(8500, "TCP port", 1, 65535)
    host: str = _opt("127.0.0.1", "address to bind (127.0.0.1: this machine only)")
    models: tuple[str, ...] | None = _opt(
        None, "comma-separated models to serve: NAME, NAME@VERSION or NAME@ALIAS (default: every registry model)"
    )
    max_batch_size: int = _opt(32, "rows per batched forward pass", 1, 4096)
    max_queue_delay_ms: float = _opt(
        2.0, "longest a request waits for others to join its batch, only while others are being parsed", 0, 1000
    )
    batching: bool = _opt(True, "batch concurrent requests (--no-batching runs each request on its own)")
    max_body_mb: float = _opt(64.0, "largest request body, in MiB (413 past it)", 0.001, 4096)
    max_rows: int = _opt(65536, "most rows (batch size) one infer request may carry (413 past it)", 1, 10_000_000)
    max_queue_rows: int = _opt(
        4096, "rows waiting per model version before new requests get 429 with Retry-After", 1, 10_000_000
    )
    body_timeout_s: float = _opt(30.0, "a request body must arrive within this many seconds (408 past it)", 0.1, 3600)
    drain_timeout_s: float = _opt(30.0, "on SIGTERM, how long requests in flight may take to finish", 0, 3600)
    poll_interval_s: float = _opt(
        1.0, "how often the registry is checked for moved aliases and new models (0: never)", 0, 3600
    )
    status_interval_s: float = _opt(2.0, "how often the endpoint's catalog row is refreshed (0: never)", 0, 3600)
    offload_bytes: int = _opt(
        1 << 20, "bodies and responses this large are parsed and encoded in a helper process", 1024, 1 << 40
    )
    offload_pending: int = _opt(4, "large bodies that may wait for the helper process before 429", 1, 1024)
    lm_slots: int = _opt(16, "KV-cache slots per language-model version: the most sequences decoded together", 1, 4096)
    lm_max_len: int = _opt(
        2048, "tokens per KV-cache slot (prompt + completion), capped at the model's context", 16, 1 << 20
    )
    lm_max_waiting: int = _opt(
        256, "sequences waiting for a free slot per language-model version before new requests get 429", 0, 1 << 20
    )
    lm_steps_per_call: int = _opt(
        0, "decode steps per device call between admissions (0: 1 on CPU, 8 on accelerators)", 0, 1024
    )
    tf_serving_port: int = _opt(
        0, "also serve TensorFlow Serving's REST API on this port (0: off; TF Serving uses 8501)", 0, 65535
    )
    tls_cert: str | None = _opt(None, "PEM certificate (chain) file: serve HTTPS; needs --tls-key")
    tls_key: str | None = _opt(None, "PEM private key file of --tls-cert")
    insecure: bool = _opt(False, "allow plain HTTP on an address other than loopback (tokens travel unencrypted)")

    def __post_init__(self) -> None:
        for f in fields(self):
            value, low, high = getattr(self, f.name), f.metadata["low"], f.metadata["high"]
            if low is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise InvalidInput(f"{f.name} must be a number from {low:g} to {high:g}, got {value!r}")
            if f.type == "int" and not isinstance(value, int):
                raise InvalidInput(f"{f.name} must be a whole number, got {value!r}")
        if self.models is not None:
            if isinstance(self.models, str) or not all(isinstance(m, str) and m for m in self.models):
                raise InvalidInput("models must be a list of names such as ['digits', 'other@2']")
            object.__setattr__(self, "models", tuple(self.models))

    # -- derived values -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{'[' + self.host + ']' if ':' in self.host else self.host}:{self.port}"

    @property
    def tf_serving_url(self) -> str | None:
        """Where TensorFlow Serving's REST API answers, or None when ``tf_serving_port`` is 0."""
        return self.url.rpartition(":")[0] + f":{self.tf_serving_port}" if self.tf_serving_port else None

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_queue_delay(self) -> float:
        return self.max_queue_delay_ms / 1000

    def with_options(self, **options: Any) -> ServeSettings:
        """A copy with ``options`` (field names) changed; unknown names are refused."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidInput(f"unknown serve option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return replace(self, **options)

    # -- command lines ------------------------------------------------------------------------------
    def to_argv(self) -> list[str]:
        """The ``python -m aios_lab.serve`` flags that rebuild these settings."""
        argv = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "batching":
                argv += [] if value else ["--no-batching"]
            elif value is None or value is False:
                continue
            elif value is True:
                argv.append(_flag(f.name))
            elif f.name == "models":
                argv += ["--models", ",".join(value)] if value else []
            else:
                argv += [_flag(f.name), str(value)]
        return argv

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any) -> ServeSettings:
        """Settings from parsed :func:`cli_arguments` flags; flags left out keep their defaults."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "batching":
                if getattr(args, "no_batching", False):
                    values["batching"] = False
                continue
            value = getattr(args, f.name, None)
            if value is None:
                continue
            values[f.name] = tuple(m.strip() for m in value.split(",") if m.strip()) if f.name == "models" else value
        return cls(**{**values, **overrides})


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def cli_arguments(exclude: tuple[str, ...] = ()) -> list[tuple[tuple, dict]]:
    """``(args, kwargs)`` for ``add_argument``, one per setting; defaults stay ``None`` so the dataclass decides."""
    out = []
    for f in fields(ServeSettings):
        if f.name in exclude:
            continue
        help_text = f.metadata["help"]
        if f.name == "batching":
            out.append((("--no-batching",), {"action": "store_true", "help": "run every request on its own"}))
            continue
        if f.type == "bool":
            out.append(((_flag(f.name),), {"action": "store_true", "default": None, "help": help_text}))
            continue
        if f.default is not None:
            help_text += f" (default {f.default})"
        kind = {"int": int, "float": float}.get(f.type, str)
        out.append(((_flag(f.name),), {"type": kind, "default": None, "help": help_text}))
    return out


def magic_flags(exclude: tuple[str, ...] = ()) -> Callable:
    """Decorator adding every setting as an IPython ``magic_arguments`` flag (for ``%aios serve``)."""
    from IPython.core.magic_arguments import argument

    def decorate(fn: Callable) -> Callable:
        for args, kwargs in reversed(cli_arguments(exclude)):
            fn = argument(*args, **kwargs)(fn)
        return fn

    return decorate


DEFAULTS = ServeSettings()
