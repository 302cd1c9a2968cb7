"""The verbs of ``%aios`` and ``aios``: one definition each, shared by the magic and the CLI.

A verb is a function ``fn(args, ctx) -> result`` decorated with IPython's ``magic_arguments``
(so its help has one source, the docstring and the argument help) and registered with ``@verb``.
Verbs only parse, call the Python API and return something to render; they hold no logic.
"""

from __future__ import annotations

import importlib
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import parse_argstring

from ..errors import AiosError


@dataclass
class Context:
    """What a verb may need from where it was called."""

    user_ns: dict[str, Any] | None = None  # the kernel's variables (for vars:); the magic passes IPython's
    cell: str | None = None  # the body of a %%aios cell
    interactive: bool = False  # True in a notebook: return widgets and HTML


@dataclass
class Verb:
    name: str
    fn: Callable[[Any, Context], Any]
    cell: bool = False

    @property
    def summary(self) -> str:
        return (self.parser.description or "").strip().splitlines()[0]

    @property
    def parser(self):
        return self.fn.parser

    def help(self) -> str:
        return self.parser.format_help().removeprefix("::").strip() + "\n"


VERBS: dict[str, Verb] = {}
_MODULES = (
    "data",
    "models",
    "jobs",
    "registry",
    "serving",
    "admin",
    "demo",
    "cluster",
    "lm",
    "metrics",
    "export",
    "experiments",
)


def verb(name: str, cell: bool = False) -> Callable:
    """Register ``fn`` (already wrapped by ``@magic_arguments()``) as ``%aios NAME``."""

    def register(fn: Callable) -> Callable:
        fn.parser.prog = f"aios {name}"  # the help formatter adds the %
        VERBS[name] = Verb(name, fn, cell)
        return fn

    return register


def load_all() -> dict[str, Verb]:
    """Import every verb module once (they register themselves)."""
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return VERBS


def split(line: str) -> tuple[Verb, str]:
    """Find the verb (one or two words, e.g. ``dataset show``) at the start of ``line``."""
    load_all()
    words = line.strip().split(None, 2)
    if not words:
        raise UsageError("no verb given; `%aios help` lists them")
    if len(words) >= 2 and f"{words[0]} {words[1]}" in VERBS:
        return VERBS[f"{words[0]} {words[1]}"], " ".join(words[2:])
    if words[0] not in VERBS:
        raise UsageError(f"unknown verb {words[0]!r}; `%aios help` lists them")
    return VERBS[words[0]], line.strip()[len(words[0]) :].strip()


def run(line: str, ctx: Context | None = None) -> Any:
    """Parse ``line`` (``VERB [ARGS]``) and call its verb; errors come out as one-line UsageErrors."""
    ctx = ctx or Context()
    v, rest = split(line)
    if v.cell and ctx.cell is None:
        raise UsageError(f"`{v.name}` is a cell magic: start the cell with %%aios {v.name} ...")
    try:
        args = parse_argstring(v.fn, rest)
    except UsageError as exc:
        raise UsageError(f"{exc}  (`%aios help {v.name}` shows the flags)") from None
    except ValueError as exc:  # shlex on an unclosed quote
        raise UsageError(f"cannot parse {rest!r}: {exc}") from None
    try:
        return v.fn(args, ctx)
    except AiosError as exc:
        raise UsageError(str(exc)) from None


def run_argv(argv: list[str], ctx: Context | None = None) -> Any:
    """Run a verb from a command line (the CLI's entry)."""
    return run(shlex.join(argv), ctx)
