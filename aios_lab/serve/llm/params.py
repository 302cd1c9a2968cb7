"""Request parameters of the language-model routes, checked before anything is queued.

Every check raises :class:`.errors.BadParam` (400) naming the parameter, in the words OpenAI's API uses:
``max_tokens`` / ``max_completion_tokens`` at least 1, ``temperature`` in [0, 2], ``top_p`` in (0, 1],
at most 4 ``stop`` strings, ``n`` at least 1, chat ``messages`` non-empty with known roles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import BadParam

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_STOP = 4
# Parameters this server does not implement: refused when set to anything but their neutral value.
UNSUPPORTED = {
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "suffix": (None, ""),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "tools": (None, []),
    "functions": (None, []),
    "tool_choice": (None, "none", "auto"),
    "best_of": (None, 1),
}


@dataclass(frozen=True)
class Sampling:
    """How to generate: token budget (None: the rest of the context), sampling settings, stop strings, choices."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1


def _number(doc: dict, key: str, default: float) -> float:
    v = doc.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BadParam(f"{key} must be a number, got {v!r}", key)
    return float(v)


def _integer(doc: dict, key: str) -> int | None:
    v = doc.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadParam(f"{key} must be a whole number, got {v!r}", key)
    return v


def sampling(doc: dict, max_n: int) -> Sampling:
    """The :class:`Sampling` of an OpenAI request body (or generate-extension ``parameters``)."""
    for key, neutral in UNSUPPORTED.items():
        if key in doc and doc[key] not in neutral:
            raise BadParam(f"{key} is not supported by this server; leave it out", key)
    fmt = doc.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise BadParam("response_format other than {'type': 'text'} is not supported by this server", "response_format")
    key = "max_completion_tokens" if doc.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _integer(doc, key)
    if max_tokens is not None and max_tokens < 1:
        raise BadParam(f"{key} must be at least 1, got {max_tokens}", key)
    temperature = _number(doc, "temperature", 1.0)
    if not 0.0 <= temperature <= 2.0:
        raise BadParam(f"temperature must be from 0 to 2, got {temperature:g}", "temperature")
    top_p = _number(doc, "top_p", 1.0)
    if not 0.0 < top_p <= 1.0:
        raise BadParam(f"top_p must be more than 0 and at most 1, got {top_p:g}", "top_p")
    top_k = _integer(doc, "top_k") or 0
    if top_k < -1:
        raise BadParam(f"top_k must be 0 or -1 (off) or a positive number of tokens, got {top_k}", "top_k")
    seed = _integer(doc, "seed")
    n = _integer(doc, "n")
    n = 1 if n is None else n
    if not 1 <= n <= max_n:
        raise BadParam(f"n must be from 1 to {max_n} (this server's slots per model), got {n}", "n")
    return Sampling(max_tokens, temperature, top_p, max(top_k, 0), seed, stop_strings(doc.get("stop")), n)


def stop_strings(value: Any) -> tuple[str, ...]:
    """``stop``: a string or a list of at most 4 strings (empty ones ignored)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise BadParam("stop must be a string or a list of strings", "stop")
    if len(value) > MAX_STOP:
        raise BadParam(f"stop takes at most {MAX_STOP} strings, got {len(value)}", "stop")
    return tuple(s for s in value if s)


def stream_options(doc: dict) -> tuple[bool, bool]:
    """``(stream, include_usage)``."""
    stream = doc.get("stream") or False
    if not isinstance(stream, bool):
        raise BadParam("stream must be true or false", "stream")
    opts = doc.get("stream_options")
    if opts is None:
        return stream, False
    if not isinstance(opts, dict):
        raise BadParam("stream_options must be an object such as {'include_usage': true}", "stream_options")
    if not stream:
        raise BadParam("stream_options is only allowed when stream is true", "stream_options")
    usage = opts.get("include_usage", False)
    if not isinstance(usage, bool):
        raise BadParam("stream_options.include_usage must be true or false", "stream_options")
    return stream, usage


def messages(doc: dict) -> list[dict]:
    """Chat ``messages`` as the chat template takes them: ``[{"role", "content": str}]``."""
    msgs = doc.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadParam("messages must be a non-empty list of {'role', 'content'} objects", "messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise BadParam(f"messages[{i}] must be an object with 'role' and 'content'", "messages")
        role = m.get("role")
        if role not in ROLES:
            raise BadParam(f"messages[{i}].role must be one of {', '.join(ROLES)}; got {role!r}", "messages")
        out.append({"role": role, "content": _content(m.get("content"), i)})
    return out


def _content(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadParam(
                    f"messages[{i}].content: only text parts ({{'type': 'text', 'text': ...}}) are supported"
                )
            texts.append(part["text"])
        return "".join(texts)
    raise BadParam(f"messages[{i}].content must be a string or a list of text parts", "messages")


def prompts(doc: dict) -> list[str | list[int]]:
    """Completion ``prompt``: a string, a list of strings, token ids, or a list of token-id lists."""
    p = doc.get("prompt")
    if isinstance(p, str):
        return [p]
    if isinstance(p, list) and p:
        if all(isinstance(x, str) for x in p):
            return list(p)
        if all(isinstance(x, int) and not isinstance(x, bool) for x in p):
            return [list(p)]
        if all(isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) for t in x) for x in p):
            return [list(x) for x in p]
    raise BadParam("prompt must be a string, a list of strings, or token ids", "prompt")


__all__ = ["Sampling", "sampling", "stop_strings", "stream_options", "messages", "prompts", "ROLES"]
