"""A served language model called over its OpenAI route, in the shape of an in-kernel one: what
``%aios chat MODEL --endpoint [URL]`` talks to.

:class:`EndpointLM` has the ``generate(messages, on_token=..., **sampling)`` that the chat widget calls on a
registry model, and streams ``/v1/chat/completions`` instead of running the model in the kernel.

>>> lm = EndpointLM.connect("chat")                                  # the running local endpoint
>>> lm = EndpointLM.connect("chat", "http://127.0.0.1:8500", token)  # or any endpoint
>>> lm.generate([{"role": "user", "content": "Hi"}], on_token=lambda d: print(d.text, end="")).text
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ...errors import AiosError, Busy, Forbidden, InvalidInput, NotFound, Unauthorized

TOKEN_ENV = "AIOS_TOKEN"


@dataclass
class Delta:
    """New text of the reply (what ``on_token`` receives, like ``lm.generate``'s deltas)."""

    index: int
    token: int | None
    text: str
    finish_reason: str | None = None


@dataclass
class RemoteCompletion:
    """The reply: text, why it ended, and the token counts the server reported."""

    text: str
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    tokens: list[int] = field(default_factory=list)  # token ids are not sent over the OpenAI route


def _error(status: int, body: bytes) -> AiosError:
    try:
        err = orjson.loads(body).get("error")
        message = err.get("message") if isinstance(err, dict) else str(err)
    except (orjson.JSONDecodeError, AttributeError):
        message = body[:200].decode("utf-8", "replace")
    kind = {400: InvalidInput, 401: Unauthorized, 403: Forbidden, 404: NotFound, 429: Busy}.get(status, AiosError)
    return kind(f"the endpoint answered {status}: {message}")


class EndpointLM:
    """Model ``model`` (``NAME``, ``NAME:VERSION`` or ``NAME:ALIAS``) served at ``url``."""

    def __init__(self, url: str, model: str, token: str, timeout: float = 600.0):
        self.url, self.model, self.token, self.timeout = url.rstrip("/"), model, token, timeout
        self.ref = f"{model} at {self.url}"
        self.chat_template = True  # the server renders it (a model without one answers 400)

    @classmethod
    def connect(cls, model: str, url: str | None = None, token: str | None = None) -> EndpointLM:
        """``url`` None: the running local endpoint (``aios serve``). ``token`` None: ``$AIOS_TOKEN``, else this
        AIOS_HOME's admin token (valid on its own endpoints)."""
        if not url:
            from ..control import endpoints

            live = [e for e in endpoints() if e.state == "running" and e.alive()]
            if not live:
                raise NotFound("no endpoint is running: start one with `%aios serve`, or give --endpoint URL")
            url = live[0].url
        if token is None:
            token = os.environ.get(TOKEN_ENV)
        if token is None:
            from ..auth import default_token

            token = default_token()
        return cls(url, model, token)

    def generate(
        self,
        messages: list[dict],
        on_token: Callable[[Delta], None] | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        stop: list[str] | str | None = None,
    ) -> RemoteCompletion:
        """Stream the assistant's reply to ``messages`` (``on_token`` gets each piece of text)."""
        import httpx

        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for key, value in (
            ("max_tokens", max_tokens),
            ("temperature", temperature),
            ("top_p", top_p),
            ("top_k", top_k or None),
            ("seed", seed),
            ("stop", stop),
        ):
            if value is not None:
                body[key] = value
        parts: list[str] = []
        out = RemoteCompletion("", "")
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            with (
                httpx.Client(timeout=self.timeout) as client,
                client.stream("POST", self.url + "/v1/chat/completions", json=body, headers=headers) as r,
            ):
                if r.status_code != 200:
                    raise _error(r.status_code, r.read())
                for line in r.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    doc = orjson.loads(line[6:])
                    if "error" in doc:
                        raise _error(500, line[6:].encode())
                    out.model = doc.get("model", out.model)
                    if doc.get("usage"):
                        out.prompt_tokens = doc["usage"]["prompt_tokens"]
                        out.completion_tokens = doc["usage"]["completion_tokens"]
                    for choice in doc.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content") or ""
                        finish = choice.get("finish_reason")
                        if finish:
                            out.finish_reason = finish
                        if text or finish:
                            parts.append(text)
                            if on_token is not None:
                                on_token(Delta(choice.get("index", 0), None, text, finish))
        except httpx.HTTPError as exc:
            raise AiosError(f"could not reach {self.url}: {exc}; is the endpoint running?") from None
        out.text = "".join(parts)
        return out

    def __repr__(self) -> str:
        return f"<EndpointLM {self.ref}>"


__all__ = ["EndpointLM", "RemoteCompletion", "Delta"]
