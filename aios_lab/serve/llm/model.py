"""A language-model version as the serving engine holds it: config, parameters, tokenizer, chat template, stop ids.

The registry hands these out for a verified version (see :class:`..repository.ModelSource`);
:func:`from_dir` opens a Hugging Face checkpoint directory the same way (benchmarks, tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import InvalidInput

# What V2 metadata shows for a language model: Triton's text-in/text-out shape of an LLM model.
SIGNATURE = {
    "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1]}],
    "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [1]}],
}


@dataclass
class LMModel:
    """One servable language-model version (``template`` None: plain prompts only)."""

    task = "lm"
    name: str
    version: int
    cfg: Any  # aios_lab.lm.LMConfig
    params: Any
    tokenizer: Any  # aios_lab.lm.Tokenizer
    template: Any = None  # aios_lab.lm.ChatTemplate
    eos_ids: tuple[int, ...] = ()
    signature: dict | None = None

    def __post_init__(self) -> None:
        self.eos_ids = tuple(int(i) for i in (self.eos_ids or getattr(self.tokenizer, "eos_ids", ())))
        if self.template is None:
            self.template = getattr(self.tokenizer, "template", None)
        self.signature = self.signature or SIGNATURE

    def encode(self, text: str) -> list[int]:
        """A plain prompt's token ids (with what the tokenizer adds, e.g. ``<s>``)."""
        return self.tokenizer.encode(text)

    def encode_chat(self, messages: list[dict]) -> list[int]:
        """A chat's token ids through the model's chat template, ready for the assistant's turn."""
        if self.template is None:
            raise InvalidInput(
                f"model {self.name!r} has no chat template: use /v1/completions with a plain prompt, "
                "or publish a version whose checkpoint has chat_template.jinja"
            )
        text = self.template.render(messages, add_generation_prompt=True)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)


def from_dir(path: str, name: str = "model", version: int = 1, dtype: Any = None) -> LMModel:
    """An :class:`LMModel` from a Hugging Face checkpoint directory (parameters in the inference layout)."""
    import numpy as np

    from ... import lm

    p = lm.load_pretrained(path, dtype=dtype or np.float32)
    return LMModel(name, version, p.cfg, p.params, p.tokenizer)


def is_lm(model: Any) -> bool:
    """Is ``model`` (what a ModelSource loaded) a language model?"""
    return getattr(model, "task", None) == "lm"


def from_loaded(name: str, version: int, model: Any) -> LMModel:
    """An :class:`LMModel` from what the registry loads for a language-model version (``parts()``)."""
    if isinstance(model, LMModel):
        return model
    cfg, params, tokenizer, template, eos_ids = model.parts()
    return LMModel(name, int(version), cfg, params, tokenizer, template, tuple(eos_ids))


__all__ = ["LMModel", "SIGNATURE", "from_dir", "from_loaded", "is_lm"]
