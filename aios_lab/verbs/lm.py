"""Verbs for language models: ``model import``, ``generate`` and ``chat``."""

from __future__ import annotations

import shlex
import sys
from typing import Any

from IPython.core.magic_arguments import argument, magic_arguments

from ..errors import InvalidInput
from ..render import Text
from . import verb
from .registry import Both


@magic_arguments()
@argument("name", help="the registry model to add a version to (a-z, 0-9, '.', '_', '-')")
@argument(
    "--from",
    dest="source",
    required=True,
    metavar="PATH|hf:ORG/REPO[@REV]",
    help="a Hugging Face checkpoint folder, or a Hub repository read through the local Hugging Face cache",
)
@argument("--alias", help="point this alias (e.g. production) at the new version")
@argument("--dtype", choices=("float32", "bfloat16", "float16"), help="store as (default: the checkpoint's dtype)")
def model_import(args, ctx):
    """Import a Hugging Face language model (Llama, Mistral, Qwen2/3, Gemma 3, GPT-2) as a registry version."""
    from ..registry import describe, import_model, models_table

    mv = import_model(args.name, args.source, alias=args.alias, dtype=args.dtype)
    return Both(Text(f"imported {describe(mv)}"), models_table(mv.name))


class Generated:
    """What ``%aios generate`` returns: the completion (``.completion``, ``.text``), already printed as it
    streamed, so a notebook shows only a one-line summary for it."""

    def __init__(self, completion: Any):
        self.completion = completion

    @property
    def text(self) -> str:
        return self.completion.text

    def cli_text(self) -> str:
        return ""  # the text went to stdout token by token

    def summary(self) -> str:
        c = self.completion
        return f"[{c.prompt_tokens} prompt + {c.completion_tokens} generated tokens, finish: {c.finish_reason}]"

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(self.summary())  # the text itself was printed as it streamed

    def __str__(self) -> str:
        return self.completion.text

    def __repr__(self) -> str:
        c = self.completion
        return f"<Generated {c.completion_tokens} tokens, finish {c.finish_reason}: {c.text[:60]!r}>"


def unquote(text: str | None) -> str | None:
    """A quoted argument without its quotes: IPython's argument splitting keeps them (``"Hello there"``)."""
    if text and len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        try:
            parts = shlex.split(text)
        except ValueError:
            return text
        if len(parts) == 1:
            return parts[0]
    return text


def _sampling(args) -> dict[str, Any]:
    return {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "seed": args.seed,
        "stop": [unquote(s) for s in args.stop] if args.stop else None,
    }


def _sampling_flags(fn):
    for flag in reversed(
        (
            argument("--max-tokens", type=int, default=128, help="most tokens to generate (default 128)"),
            argument("--temperature", type=float, default=0.0, help="0 is greedy (default); higher is more random"),
            argument("--top-p", type=float, default=1.0, help="nucleus sampling: keep this much probability mass"),
            argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (0: all)"),
            argument("--seed", type=int, default=None, help="the same seed gives the same text"),
            argument("--stop", action="append", help="stop at this string (repeatable)"),
        )
    ):
        fn = flag(fn)
    return fn


@magic_arguments()
@argument("model", metavar="MODEL[:V|ALIAS]", help="a registry language model")
@argument("prompt", help="the prompt, in quotes")
@argument("--chat", action="store_true", help="send the prompt as a user message through the chat template")
@_sampling_flags
def generate(args, ctx):
    """Complete a prompt with a registry language model, printing tokens as they come."""
    from ..registry import cached_lm, parse_ref

    name, version = parse_ref(args.model)
    lm = cached_lm(name, version)
    text = unquote(args.prompt)
    prompt = [{"role": "user", "content": text}] if args.chat else text

    def show(delta: Any) -> None:
        if delta.text:
            sys.stdout.write(delta.text)
            sys.stdout.flush()

    completion = lm.generate(prompt, on_token=show, **_sampling(args))
    if ctx.interactive:
        sys.stdout.write("\n")
    return Generated(completion)


@magic_arguments()
@argument("model", metavar="MODEL[:V|ALIAS]", help="a registry language model with a chat template")
@argument("--system", help="a system message to start the conversation with")
@argument(
    "--endpoint",
    nargs="?",
    const="",
    metavar="URL",
    help="chat with the model served at URL (default: the running local endpoint) over its OpenAI route, "
    "instead of loading it in the kernel; the token is $AIOS_TOKEN, else this AIOS_HOME's admin token",
)
@_sampling_flags
def chat(args, ctx):
    """A chat box in the notebook: streams the model's replies and keeps the conversation."""
    from ..chat_widget import ChatBox
    from ..registry import cached_lm, parse_ref

    if not ctx.interactive:
        raise InvalidInput("chat is a notebook widget; from a terminal use `aios generate MODEL PROMPT --chat`")
    if args.endpoint is not None:
        from ..serve.llm.client import EndpointLM

        remote = EndpointLM.connect(args.model, args.endpoint or None)
        return ChatBox(remote, system=unquote(args.system), **_sampling(args))
    name, version = parse_ref(args.model)
    lm = cached_lm(name, version)
    if lm.chat_template is None:
        raise InvalidInput(f"{lm.ref} has no chat template; use `%aios generate {args.model} PROMPT` instead")
    return ChatBox(lm, system=unquote(args.system), **_sampling(args))


verb("model import")(model_import)
verb("generate")(generate)
verb("chat")(chat)
