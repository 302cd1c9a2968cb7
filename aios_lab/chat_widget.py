"""``%aios chat MODEL``: a chat box that streams a registry language model's reply and keeps the conversation.

The state lives in :class:`Conversation` (messages, the reply being streamed), which needs no widgets;
:class:`ChatBox` draws it with ipywidgets and generates on a background thread, so the kernel stays
free while tokens arrive.

>>> box = ChatBox(aios.registry.load("qwen"), system="Answer briefly.", max_tokens=64)
>>> box                      # type and press Enter (or Send); Clear starts over
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import AiosError, Busy

ROLE_STYLE = {
    "user": "background:var(--jp-layout-color2,#eee);",
    "assistant": "",
    "system": "color:var(--jp-ui-font-color2,#777);font-style:italic;",
}
REDRAW_S = 0.05  # at most this often while streaming


class Conversation:
    """A chat with one language model: the messages so far and, while it streams, the partial reply."""

    def __init__(self, lm: Any, system: str | None = None, **settings: Any):
        self.lm = lm
        self.settings = settings  # generate() settings: max_tokens, temperature, top_p, top_k, seed, stop
        self.system = system
        self.messages: list[dict[str, str]] = []
        self.partial: str | None = None  # the reply so far while generating, else None
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Start over (the system message stays)."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.partial = None

    @property
    def busy(self) -> bool:
        return self.partial is not None

    def send(self, text: str, on_text: Callable[[str], None] | None = None) -> str:
        """Add the user's ``text``, generate the reply (``on_text(reply_so_far)`` as tokens arrive), keep it."""
        text = text.strip()
        if not text:
            raise AiosError("type a message first")
        if not self._lock.acquire(blocking=False):
            raise Busy("still answering the last message; wait for it to finish")
        try:
            self.messages.append({"role": "user", "content": text})
            self.partial = ""

            def on_token(delta: Any) -> None:
                if delta.text:
                    self.partial += delta.text
                    if on_text is not None:
                        on_text(self.partial)

            try:
                reply = self.lm.generate(list(self.messages), on_token=on_token, **self.settings).text
            except BaseException:
                self.messages.pop()  # the turn never happened
                raise
            self.messages.append({"role": "assistant", "content": reply})
            return reply
        finally:
            self.partial = None
            self._lock.release()

    def transcript(self) -> list[tuple[str, str]]:
        """(role, text) of every message, with the reply being streamed as the last assistant turn."""
        rows = [(m["role"], m["content"]) for m in self.messages]
        if self.partial is not None:
            rows.append(("assistant", self.partial))
        return rows


def render(transcript: list[tuple[str, str]], status: str = "") -> str:
    """The conversation as HTML (one block per message)."""
    blocks = "".join(
        f"<div style='margin:4px 0;padding:4px 8px;border-radius:4px;white-space:pre-wrap;{ROLE_STYLE.get(r, '')}'>"
        f"<b>{html.escape(r)}</b>: {html.escape(t)}</div>"
        for r, t in transcript
    )
    tail = f"<div style='color:var(--jp-ui-font-color2,#777)'>{html.escape(status)}</div>" if status else ""
    return f"<div class='aios-chat'>{blocks or '<i>say something</i>'}{tail}</div>"


def _widgets():
    import ipywidgets

    return ipywidgets


class ChatBox:
    """The widget: the conversation, a text box, Send and Clear (see the module docstring)."""

    def __init__(self, lm: Any, system: str | None = None, background: bool = True, **settings: Any):
        w = _widgets()
        self.conversation = Conversation(lm, system, **settings)
        self.background = background
        self.log = w.HTML(render(self.conversation.transcript()))
        self.entry = w.Text(placeholder=f"Message {getattr(lm, 'ref', 'the model')}", continuous_update=False)
        self.send_button = w.Button(description="Send", button_style="primary")
        self.clear_button = w.Button(description="Clear")
        self.status = ""
        self.widget = w.VBox(
            [self.log, w.HBox([self.entry, self.send_button, self.clear_button])],
            layout=w.Layout(width="100%"),
        )
        self.entry.observe(self._on_enter, names="value")
        self.send_button.on_click(lambda _: self.submit(self.entry.value))
        self.clear_button.on_click(lambda _: self.clear())
        self._thread: threading.Thread | None = None
        self._drawn = 0.0

    def _on_enter(self, change: dict) -> None:
        if change.get("new"):
            self.submit(change["new"])

    def submit(self, text: str) -> None:
        """Send ``text``: the reply streams into the log (on a thread unless ``background=False``)."""
        if not text.strip() or self.conversation.busy:
            return
        self.entry.value = ""
        self._set_busy(True)
        if self.background:
            self._thread = threading.Thread(target=self._answer, args=(text,), daemon=True, name="aios-chat")
            self._thread.start()
        else:
            self._answer(text)

    def wait(self, timeout: float | None = None) -> None:
        """Until the reply being generated (if any) is complete."""
        if self._thread is not None:
            self._thread.join(timeout)

    def clear(self) -> None:
        if self.conversation.busy:
            return
        self.conversation.reset()
        self.status = ""
        self._draw(force=True)

    def _answer(self, text: str) -> None:
        self.status = "generating..."
        try:
            self.conversation.send(text, on_text=lambda _: self._draw())
            self.status = ""
        except AiosError as exc:
            self.status = str(exc)
        except Exception as exc:  # a widget callback has nowhere to raise to
            self.status = f"{type(exc).__name__}: {exc}"
        finally:
            self._set_busy(False)
            self._draw(force=True)

    def _set_busy(self, busy: bool) -> None:
        self.entry.disabled = self.send_button.disabled = self.clear_button.disabled = busy
        self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._drawn >= REDRAW_S:
            self._drawn = now
            self.log.value = render(self.conversation.transcript(), self.status)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        return f"<ChatBox {len(self.conversation.messages)} messages>"


__all__ = ["Conversation", "ChatBox", "render"]
