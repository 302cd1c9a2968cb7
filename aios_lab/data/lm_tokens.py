"""Records -> token ids and a per-token "train on this" flag, with a registry model's tokenizer and chat template.

* ``text``: the text as the tokenizer encodes a prompt (its BOS, if any), then EOS; every token trains.
* ``completion``: the prompt (with BOS) then the completion and EOS; only the completion and EOS train.
* ``chat``: the conversation rendered by the chat template; only the assistant's tokens train. They are
  the template's ``{% generation %}`` blocks when it has them; otherwise each assistant turn is what
  the rendering gains from the prompt for that turn (``add_generation_prompt``) to the turn itself.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInput

Document = tuple[list[int], list[int]]  # (token ids, 1 where the token is a training target)


def encode(tokenizer: Any, record: dict[str, Any], fmt: str, where: str = "a record") -> Document:
    """The token ids of one record and which of them are training targets."""
    eos = [int(tokenizer.eos_ids[0])] if tokenizer.eos_ids else []
    if fmt == "text":
        ids = tokenizer.encode(record["text"]) + eos
        return ids, [1] * len(ids)
    if fmt == "completion":
        prompt = tokenizer.encode(record["prompt"])
        answer = tokenizer.encode(record["completion"], add_special_tokens=False) + eos
        return prompt + answer, [0] * len(prompt) + [1] * len(answer)
    return encode_chat(tokenizer, record["messages"], where)


def encode_chat(tokenizer: Any, messages: list[dict], where: str = "a chat") -> Document:
    """A chat's token ids (rendered, no special tokens added) and 1 on the assistant's tokens."""
    text, spans = assistant_spans(tokenizer, messages, where)
    enc = tokenizer.backend.encode(text, add_special_tokens=False)
    return list(enc.ids), spans_to_mask(enc.offsets, spans)


def assistant_spans(tokenizer: Any, messages: list[dict], where: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendered chat and the character spans of the assistant's turns."""
    template = tokenizer.template
    if template is None:
        raise InvalidInput("the model has no chat template: use --format text or completion, or import one with it")
    text, spans = template.render_with_spans(messages, add_generation_prompt=False)
    if spans:
        return text, spans
    out = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        if i == 0:
            raise InvalidInput(f"{where} starts with an assistant message; begin with a system or user turn")
        before = template.render(messages[:i], add_generation_prompt=True)
        upto = template.render(messages[: i + 1], add_generation_prompt=False)
        if not (upto.startswith(before) and text.startswith(upto)):
            raise InvalidInput(
                f"the chat template renders earlier turns differently once a reply follows ({where}), so the "
                "assistant's tokens cannot be found: mark them with {% generation %}...{% endgeneration %}"
            )
        out.append((len(before), len(upto)))
    return text, out


def spans_to_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """1 for every token whose characters overlap a span."""
    mask, s = [0] * len(offsets), 0
    for i, (start, end) in enumerate(offsets):
        while s < len(spans) and start >= spans[s][1]:
            s += 1
        if s == len(spans):
            break
        if end > spans[s][0] and end > start:
            mask[i] = 1
    return mask


__all__ = ["encode", "encode_chat", "assistant_spans", "spans_to_mask", "Document"]
