"""Chat templates: found where transformers keeps them, rendered exactly as ``apply_chat_template`` renders them.

Rendering uses jinja2's immutable sandbox with transformers' settings (``trim_blocks``,
``lstrip_blocks``, loop controls, ``raise_exception``, ``strftime_now``, a ``tojson`` that does not
escape HTML, and the ``{% generation %}`` tag, whose character spans are reported so that training
data can mask the loss to assistant tokens). Templates come from the checkpoint, so they are untrusted
code: the sandbox is the point.

>>> tpl = ChatTemplate.from_dir(path)
>>> tpl.render(messages, add_generation_prompt=True, bos_token="<s>")
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from datetime import datetime
from functools import lru_cache
from typing import Any

from ..errors import AiosError

# While rendering with spans: (the pieces rendered so far, the spans found so far).
_SPANS: ContextVar[tuple[list, list] | None] = ContextVar("aios_chat_spans", default=None)


def find_template(path: str, name: str | None = None) -> str | None:
    """The chat template of checkpoint ``path``: ``chat_template.jinja`` (transformers 5), ``chat_template.json``,
    or ``tokenizer_config.json``'s ``chat_template`` (a string or a list of named templates); None if it has none."""
    jinja = os.path.join(path, "chat_template.jinja")
    if name is None and os.path.isfile(jinja):
        with open(jinja, encoding="utf-8") as f:
            return f.read()
    if name is not None:
        extra = os.path.join(path, "additional_chat_templates", f"{name}.jinja")
        if os.path.isfile(extra):
            with open(extra, encoding="utf-8") as f:
                return f.read()
    for file in ("chat_template.json", "tokenizer_config.json"):
        full = os.path.join(path, file)
        if not os.path.isfile(full):
            continue
        try:
            with open(full, encoding="utf-8") as f:
                value = json.load(f).get("chat_template")
        except (OSError, ValueError, AttributeError) as exc:
            raise AiosError(f"cannot read {file} in {path}: {exc}") from None
        if value:
            return _pick(value, name, path)
    if name is not None:
        raise AiosError(f"{path} has no chat template named {name!r}")
    return None


def _pick(value: Any, name: str | None, path: str) -> str:
    """A template from ``chat_template``: a string, or ``[{"name", "template"}, ...]`` (``default`` unless named)."""
    if isinstance(value, str):
        return value
    named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
    want = name or "default"
    if want not in named:
        raise AiosError(f"{path} has chat templates {', '.join(map(str, named))} but none named {want!r}")
    return named[want]


@lru_cache(maxsize=32)
def _compile(source: str) -> Any:
    """The template compiled in a sandboxed environment set up the way transformers sets it up."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """``{% generation %}...{% endgeneration %}``: renders its body and records its character span."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_mark"), [], [], body).set_lineno(lineno)

        def _mark(self, caller):
            text = caller()
            tracking = _SPANS.get()
            if tracking is not None:  # every earlier piece has been yielded and collected by now
                pieces, spans = tracking
                start = sum(map(len, pieces))
                spans.append((start, start + len(text)))
            return text

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    class Namespace(jinja2.utils.Namespace):
        """jinja's namespace without underscore attributes (as transformers restricts it)."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for key in attrs:
                Namespace._check(key)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, key, value):
            Namespace._check(key)
            jinja2.utils.Namespace.__setitem__(self, key, value)

        @staticmethod
        def _check(key):
            if isinstance(key, str) and key.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot set {key!r} on a namespace")

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now, namespace=Namespace, dict=dict)
    return env.from_string(source)


def _plain(messages: Any) -> list[dict]:
    """Messages as plain dicts, keys whose value is None dropped, reasoning aliased (as transformers does)."""
    out = []
    for m in messages:
        if not isinstance(m, dict):
            raise AiosError(f"chat messages are dicts with 'role' and 'content', got {type(m).__name__}")
        m = {k: v for k, v in m.items() if v is not None}
        reasoning = next((m[k] for k in ("reasoning_content", "thinking", "reasoning") if m.get(k) is not None), None)
        if reasoning is not None:
            m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        out.append(m)
    return out


class ChatTemplate:
    """A checkpoint's chat template, rendered with its special tokens."""

    def __init__(self, source: str, special: dict[str, str] | None = None):
        self.source = source
        self.special = dict(special or {})
        try:
            self._template = _compile(source)
        except Exception as exc:  # jinja2.TemplateSyntaxError and friends
            raise AiosError(f"the chat template does not compile: {type(exc).__name__}: {_first_line(exc)}") from None

    @classmethod
    def from_dir(cls, path: str, special: dict[str, str] | None = None, name: str | None = None) -> ChatTemplate | None:
        source = find_template(path, name)
        return None if source is None else cls(source, special)

    def render(
        self,
        messages: list[dict],
        add_generation_prompt: bool = True,
        tools: list | None = None,
        documents: list | None = None,
        **kwargs: Any,
    ) -> str:
        """The prompt text for ``messages`` (extra ``kwargs`` reach the template, e.g. ``enable_thinking``)."""
        return self.render_with_spans(messages, add_generation_prompt, tools, documents, **kwargs)[0]

    def render_with_spans(
        self,
        messages: list[dict],
        add_generation_prompt: bool = True,
        tools: list | None = None,
        documents: list | None = None,
        **kwargs: Any,
    ) -> tuple[str, list[tuple[int, int]]]:
        """The text and the character spans of its ``{% generation %}`` blocks (the assistant's own words)."""
        import jinja2

        if not messages:
            raise AiosError("a chat needs at least one message")
        pieces: list[str] = []
        spans: list[tuple[int, int]] = []
        token = _SPANS.set((pieces, spans))
        try:
            for piece in self._template.generate(
                messages=_plain(messages),
                tools=tools,
                documents=documents,
                add_generation_prompt=add_generation_prompt,
                **{**self.special, **kwargs},
            ):
                pieces.append(piece)
        except jinja2.exceptions.TemplateError as exc:
            raise AiosError(f"chat template: {_first_line(exc)}") from None
        except Exception as exc:  # the template's own bugs (TypeError, ...) are still one line for the user
            raise AiosError(f"chat template failed: {type(exc).__name__}: {_first_line(exc)}") from None
        finally:
            _SPANS.reset(token)
        return "".join(pieces), spans


def _first_line(exc: Exception) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["ChatTemplate", "find_template"]
