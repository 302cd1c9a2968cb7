"""A checkpoint's tokenizer (``tokenizer.json`` via ``tokenizers``), its special tokens and its chat template.

Special tokens and stop ids come from ``tokenizer_config.json``, ``config.json`` and
``generation_config.json`` together. Encoding a plain prompt adds what the tokenizer's post-processor
adds (e.g. ``<s>``); encoding a rendered chat adds nothing, as transformers does.

>>> tok = Tokenizer.from_dir(path, cfg)          # cfg checks the vocab fits the embedding
>>> ids = tok.encode_chat([{"role": "user", "content": "Hi"}])
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from ..errors import AiosError
from .chat import ChatTemplate
from .config import LMConfig

SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise AiosError(f"cannot read {os.path.basename(path)}: {exc}") from None
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str | None:
    """A special token as written in tokenizer_config.json: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


class Tokenizer:
    """Encode/decode text, render chats, and know the special tokens and stop ids of one checkpoint."""

    def __init__(
        self,
        backend: Any,
        special: dict[str, str],
        eos_ids: Sequence[int],
        template: ChatTemplate | None,
        add_bos: bool = False,
        path: str | None = None,
    ):
        self.backend = backend  # a tokenizers.Tokenizer
        self.special = special  # {"bos_token": "<s>", ...}: what templates see
        self.eos_ids = tuple(dict.fromkeys(int(i) for i in eos_ids))
        self.template = template
        self.add_bos = add_bos
        self.path = path

    @classmethod
    def from_dir(cls, path: str, cfg: LMConfig | None = None, template_name: str | None = None) -> Tokenizer:
        """Load ``tokenizer.json`` and friends from checkpoint ``path``; with ``cfg``, check the vocab fits."""
        from tokenizers import Tokenizer as Backend

        file = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(file):
            raise AiosError(
                f"{path} has no tokenizer.json (sentencepiece-only or vocab.json/merges.txt tokenizers "
                "are not read: save the tokenizer with transformers to get tokenizer.json)"
            )
        try:
            backend = Backend.from_file(file)
        except Exception as exc:  # the Rust side raises plain Exceptions
            raise AiosError(
                f"cannot load {file}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from None
        tcfg = _read_json(os.path.join(path, "tokenizer_config.json"))
        special = {k: t for k in SPECIAL_KEYS if (t := _token_text(tcfg.get(k))) is not None}
        eos: list[int] = []
        if "eos_token" in special and backend.token_to_id(special["eos_token"]) is not None:
            eos.append(backend.token_to_id(special["eos_token"]))
        if cfg is not None:
            eos += list(cfg.eos_token_ids)
            for key, tid in (
                ("bos_token", cfg.bos_token_id),
                ("eos_token", next(iter(cfg.eos_token_ids), None)),
                ("pad_token", cfg.pad_token_id),
            ):
                if key not in special and tid is not None and backend.id_to_token(tid) is not None:
                    special[key] = backend.id_to_token(tid)
        else:
            eos += _ids(_read_json(os.path.join(path, "config.json")).get("eos_token_id"))
            eos += _ids(_read_json(os.path.join(path, "generation_config.json")).get("eos_token_id"))
        tok = cls(
            backend,
            special,
            eos,
            ChatTemplate.from_dir(path, special, template_name),
            add_bos=bool(tcfg.get("add_bos_token", False)),
            path=path,
        )
        if cfg is not None:
            tok.check_vocab(cfg)
        return tok

    @property
    def vocab_size(self) -> int:
        """Every id the tokenizer can produce is below this (added tokens included)."""
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def check_vocab(self, cfg: LMConfig) -> None:
        """A one-line AiosError unless every token id fits the model's embedding."""
        if self.vocab_size > cfg.vocab_size:
            raise AiosError(
                f"the tokenizer has {self.vocab_size} tokens but the model's embedding has "
                f"{cfg.vocab_size} rows: tokenizer.json is not this model's"
            )

    def token_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    @property
    def bos_id(self) -> int | None:
        bos = self.special.get("bos_token")
        return None if bos is None else self.backend.token_to_id(bos)

    @property
    def pad_id(self) -> int:
        pad = self.special.get("pad_token")
        pid = None if pad is None else self.backend.token_to_id(pad)
        return int(pid if pid is not None else (self.eos_ids[0] if self.eos_ids else 0))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; ``add_special_tokens`` applies the post-processor (and ``add_bos_token``)."""
        ids = list(self.backend.encode(text, add_special_tokens=add_special_tokens).ids)
        bos = self.bos_id
        if add_special_tokens and self.add_bos and bos is not None and (not ids or ids[0] != bos):
            ids.insert(0, bos)
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True, **kwargs: Any) -> str:
        """The chat as prompt text, by the checkpoint's template (see :class:`ChatTemplate`)."""
        return self._template().render(messages, add_generation_prompt=add_generation_prompt, **kwargs)

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True, **kwargs: Any) -> list[int]:
        """Token ids of the rendered chat (no special tokens added beyond what the template writes)."""
        return self.encode(self.render_chat(messages, add_generation_prompt, **kwargs), add_special_tokens=False)

    def encode_chat_with_mask(self, messages: list[dict], **kwargs: Any) -> tuple[list[int], list[int]]:
        """Token ids of the whole chat and a 0/1 mask of the assistant's tokens (the template's
        ``{% generation %}`` blocks), for training on assistant turns only; all zeros if it has none."""
        text, spans = self._template().render_with_spans(messages, add_generation_prompt=False, **kwargs)
        enc = self.backend.encode(text, add_special_tokens=False)
        mask, s = [0] * len(enc.ids), 0
        for i, (start, end) in enumerate(enc.offsets):
            while s < len(spans) and start >= spans[s][1]:
                s += 1
            if s == len(spans):
                break
            if end > spans[s][0]:
                mask[i] = 1
        return list(enc.ids), mask

    def _template(self) -> ChatTemplate:
        if self.template is None:
            raise AiosError(
                f"{self.path or 'this tokenizer'} has no chat template: pass plain prompts, "
                "or add chat_template.jinja to the checkpoint"
            )
        return self.template

    def __repr__(self) -> str:
        return (
            f"Tokenizer({self.vocab_size} tokens, eos {list(self.eos_ids)}, chat template: {self.template is not None})"
        )


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


__all__ = ["Tokenizer"]
