"""Language models in pure JAX: Hugging Face checkpoints (Llama, Mistral, Qwen2, Qwen3, Gemma 3 text, GPT-2),
their tokenizers and chat templates, and KV-cache generation.

Modules, one job each: ``config`` (config.json -> LMConfig), ``model`` (params, init, forward),
``layers``/``rope`` (the maths), ``safetensors_files`` + ``weights`` (checked, streamed import),
``tokenizer`` + ``chat`` (tokenizer.json, chat templates), ``cache`` + ``decode`` + ``sampling``
(the pieces a serving engine drives), ``textstream`` (tokens -> text with stop strings, per request),
``generate`` (batched, streamed generation), ``card`` (summary),
``pretrained`` (a checkpoint directory in one call). Depends only on jax, numpy, safetensors,
tokenizers and jinja2.
"""

from .cache import KVCache, cache_bytes, cache_for, new_cache
from .card import ModelCard, card
from .chat import ChatTemplate, find_template
from .config import ARCHITECTURES, LMConfig, Rope, from_dict, from_hf, read_config, supported
from .decode import DecodeState, decode_loop, decode_step, prefill, prefill_into_slot
from .generate import Completion, Delta, generate, stream
from .model import LanguageModel, count_params, forward, init_params, logits, param_shapes, stack, unstack
from .pretrained import Pretrained, load_pretrained
from .safetensors_files import SafetensorsCheckpoint
from .sampling import row_keys, sample
from .textstream import TextStream
from .tokenizer import Tokenizer
from .weights import iter_params, load_params, nest

__all__ = [
    "LMConfig",
    "Rope",
    "ARCHITECTURES",
    "read_config",
    "from_hf",
    "from_dict",
    "supported",
    "LanguageModel",
    "param_shapes",
    "init_params",
    "count_params",
    "forward",
    "logits",
    "stack",
    "unstack",
    "SafetensorsCheckpoint",
    "iter_params",
    "load_params",
    "nest",
    "Tokenizer",
    "ChatTemplate",
    "find_template",
    "KVCache",
    "new_cache",
    "cache_for",
    "cache_bytes",
    "prefill",
    "prefill_into_slot",
    "decode_step",
    "decode_loop",
    "DecodeState",
    "sample",
    "row_keys",
    "generate",
    "stream",
    "Completion",
    "Delta",
    "TextStream",
    "ModelCard",
    "card",
    "Pretrained",
    "load_pretrained",
]
