"""One frozen, hashable config for every supported family, read from a Hugging Face ``config.json``.

Both spellings of RoPE settings are read: ``rope_theta`` + ``rope_scaling`` (older checkpoints) and
transformers 5's ``rope_parameters`` (for Gemma 3 a dict per layer type). The config is hashable so
jitted functions take it as a static argument.

>>> cfg = read_config("path/to/checkpoint")          # or from_hf(json.load(...))
>>> cfg.family, cfg.num_layers, cfg.context
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Any

from ..errors import AiosError

# architecture -> family
ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma3ForCausalLM": "gemma3",
    "GPT2LMHeadModel": "gpt2",
}
ROPE_TYPES = ("default", "linear", "llama3")
ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
}


@dataclass(frozen=True)
class Rope:
    """Rotary embedding settings: base, and the scaling (``llama3`` and ``linear``) that changes the frequencies."""

    theta: float = 10000.0
    kind: str = "default"  # default | linear | llama3
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_context: int = 8192


@dataclass(frozen=True)
class LMConfig:
    """Everything the forward pass needs, normalised across families (hashable: a static jit argument)."""

    family: str
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    context: int  # max_position_embeddings / n_positions
    norm_eps: float = 1e-6
    norm: str = "rms"  # rms | layer (GPT-2: LayerNorm with bias)
    norm_offset: float = 0.0  # Gemma: RMSNorm scales by (1 + w)
    activation: str = "silu"  # silu | gelu_tanh | gelu | relu
    gated_mlp: bool = True  # gate/up/down (Llama, Gemma) vs fc/proj (GPT-2)
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False  # Qwen3 and Gemma 3 normalise q and k per head
    sandwich_norm: bool = False  # Gemma: post-attention, pre- and post-feedforward norms
    learned_positions: bool = False  # GPT-2
    rope: Rope = Rope()
    rope_local: Rope | None = None  # Gemma 3 sliding layers use their own base
    sliding_window: int | None = None
    layer_types: tuple[str, ...] = ()  # "full" | "sliding" per layer
    attn_scale: float = 0.0  # multiplies q.k; 0 means head_dim ** -0.5
    attn_scale_by_layer: bool = False  # GPT-2 scale_attn_by_inverse_layer_idx
    attn_softcap: float | None = None
    final_softcap: float | None = None
    embed_scale: float = 1.0  # Gemma: sqrt(hidden)
    tie_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    dtype: str = "float32"  # what the checkpoint stores

    @property
    def scale(self) -> float:
        """The attention logit scale."""
        return self.attn_scale or self.head_dim**-0.5

    @property
    def sliding(self) -> tuple[bool, ...]:
        """Per layer: does it attend through the sliding window?"""
        if not self.layer_types:
            return (self.sliding_window is not None,) * self.num_layers
        return tuple(t == "sliding" and self.sliding_window is not None for t in self.layer_types)

    def to_dict(self) -> dict:
        """A JSON-ready dict (round-trips through :func:`from_dict`), for model specs and registry metadata."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> LMConfig:
        return dataclasses.replace(self, **changes)


def from_dict(d: dict) -> LMConfig:
    """The inverse of ``LMConfig.to_dict``."""
    d = dict(d)
    d["rope"] = Rope(**d["rope"]) if isinstance(d.get("rope"), dict) else d.get("rope", Rope())
    if isinstance(d.get("rope_local"), dict):
        d["rope_local"] = Rope(**d["rope_local"])
    for key in ("layer_types", "eos_token_ids"):
        d[key] = tuple(d.get(key) or ())
    return LMConfig(**d)


def read_config(path: str) -> LMConfig:
    """The config of the checkpoint directory ``path`` (its config.json, plus generation_config.json's eos)."""
    file = os.path.join(path, "config.json")
    if not os.path.isfile(file):
        raise AiosError(f"{path} has no config.json: point at a Hugging Face checkpoint directory")
    try:
        with open(file, encoding="utf-8") as f:
            raw = json.load(f)
        gen = {}
        gen_file = os.path.join(path, "generation_config.json")
        if os.path.isfile(gen_file):
            with open(gen_file, encoding="utf-8") as f:
                gen = json.load(f)
    except (OSError, ValueError) as exc:
        raise AiosError(f"cannot read the config in {path}: {exc}") from None
    return from_hf(raw, gen)


def supported() -> str:
    """The supported architectures, for error messages."""
    return ", ".join(ARCHITECTURES)


def from_hf(raw: dict, generation: dict | None = None) -> LMConfig:
    """Normalise a Hugging Face config dict (and optional generation config) into an LMConfig."""
    archs = raw.get("architectures") or []
    arch = next((a for a in archs if a in ARCHITECTURES), None)
    if arch is None:
        got = ", ".join(archs) if archs else f"model_type {raw.get('model_type')!r}"
        raise AiosError(f"unsupported architecture {got}; supported: {supported()}")
    family = ARCHITECTURES[arch]
    try:
        cfg = _gpt2(raw) if family == "gpt2" else _decoder(raw, family)
    except (KeyError, TypeError, ValueError) as exc:
        raise AiosError(f"config.json for {arch} is incomplete or malformed: {type(exc).__name__}: {exc}") from None
    eos = _ids(raw.get("eos_token_id")) + _ids((generation or {}).get("eos_token_id"))
    return cfg.replace(
        architecture=arch,
        eos_token_ids=tuple(dict.fromkeys(eos)),
        bos_token_id=raw.get("bos_token_id"),
        pad_token_id=raw.get("pad_token_id"),
        dtype=str(raw.get("dtype") or raw.get("torch_dtype") or "float32"),
    )


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _gpt2(raw: dict) -> LMConfig:
    hidden = int(raw["n_embd"])
    heads = int(raw["n_head"])
    act = raw.get("activation_function", "gelu_new")
    return LMConfig(
        family="gpt2",
        architecture="GPT2LMHeadModel",
        vocab_size=int(raw["vocab_size"]),
        hidden_size=hidden,
        intermediate_size=int(raw.get("n_inner") or 4 * hidden),
        num_layers=int(raw["n_layer"]),
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=hidden // heads,
        context=int(raw["n_positions"]),
        norm_eps=float(raw.get("layer_norm_epsilon", 1e-5)),
        norm="layer",
        activation=_activation(act),
        gated_mlp=False,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        learned_positions=True,
        attn_scale=(hidden // heads) ** -0.5 if raw.get("scale_attn_weights", True) else 1.0,
        attn_scale_by_layer=bool(raw.get("scale_attn_by_inverse_layer_idx", False)),
        tie_embeddings=bool(raw.get("tie_word_embeddings", True)),
    )


# transformers' defaults for keys a config.json may leave out (older or hand-written configs)
DEFAULTS = {
    "llama": {"max_position_embeddings": 2048},
    "mistral": {"max_position_embeddings": 131072, "sliding_window": 4096, "num_key_value_heads": 8},
    "qwen2": {"max_position_embeddings": 32768},
    "qwen3": {"max_position_embeddings": 32768},
    "gemma3": {
        "max_position_embeddings": 131072,
        "sliding_window": 4096,
        "head_dim": 256,
        "query_pre_attn_scalar": 256,
        "hidden_activation": "gelu_pytorch_tanh",
        "tie_word_embeddings": True,
        "num_key_value_heads": 4,
    },
}


def _decoder(raw: dict, family: str) -> LMConfig:
    raw = {**DEFAULTS.get(family, {}), **raw}  # an explicit null (e.g. sliding_window) still wins
    hidden = int(raw["hidden_size"])
    heads = int(raw["num_attention_heads"])
    head_dim = int(raw.get("head_dim") or hidden // heads)
    layers = int(raw["num_hidden_layers"])
    gemma = family == "gemma3"
    if gemma and raw.get("use_bidirectional_attention"):
        raise AiosError(
            "Gemma 3 with use_bidirectional_attention (an embedding model) is not a causal LM; "
            "import a Gemma3ForCausalLM text checkpoint"
        )
    window = raw.get("sliding_window")
    if family in ("qwen2", "qwen3") and not raw.get("use_sliding_window", False):
        window = None
    types = _layer_types(raw, layers, family, window)
    if gemma:
        rope, local = _gemma_ropes(raw)
    else:
        rope, local = (
            _rope(raw, raw.get("rope_parameters"), raw.get("rope_theta", 10000.0), raw.get("rope_scaling")),
            None,
        )
    # Qwen2 always biases q/k/v (never o); Mistral never biases; the others follow attention_bias.
    bias = bool(raw.get("attention_bias", False)) and family != "mistral"
    return LMConfig(
        family=family,
        architecture="",
        vocab_size=int(raw["vocab_size"]),
        hidden_size=hidden,
        intermediate_size=int(raw["intermediate_size"]),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=int(raw.get("num_key_value_heads") or heads),
        head_dim=head_dim,
        context=int(raw["max_position_embeddings"]),
        norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        norm_offset=1.0 if gemma else 0.0,
        activation=_activation(raw.get("hidden_activation") or raw.get("hidden_act") or "silu"),
        qkv_bias=bias or family == "qwen2",
        o_bias=bias and family != "qwen2",
        mlp_bias=family == "llama" and bool(raw.get("mlp_bias", False)),
        qk_norm=family in ("qwen3", "gemma3"),
        sandwich_norm=gemma,
        rope=rope,
        rope_local=local,
        sliding_window=int(window) if window else None,
        layer_types=types,
        attn_scale=float(raw["query_pre_attn_scalar"]) ** -0.5 if gemma else 0.0,
        # transformers' Gemma 3 reads attn_logit_softcapping but never applies it (Gemma 2 did); neither do we.
        attn_softcap=None,
        final_softcap=_opt_float(raw.get("final_logit_softcapping")) if gemma else None,
        embed_scale=math.sqrt(hidden) if gemma else 1.0,
        tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
    )


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise AiosError(f"unsupported activation {name!r}; supported: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _layer_types(raw: dict, layers: int, family: str, window: Any) -> tuple[str, ...]:
    """ "full"/"sliding" per layer from ``layer_types``, Gemma's pattern, or Qwen's ``max_window_layers``."""
    types = raw.get("layer_types")
    if types:
        if len(types) != layers:
            raise AiosError(f"config.json lists {len(types)} layer_types for {layers} layers")
        return tuple("sliding" if t == "sliding_attention" else "full" for t in types)
    if family == "gemma3":
        pattern = int(raw.get("sliding_window_pattern") or raw.get("_sliding_window_pattern") or 6)
        return tuple("sliding" if (i + 1) % pattern else "full" for i in range(layers))
    if family in ("qwen2", "qwen3") and window:
        first = int(raw.get("max_window_layers", layers))
        return tuple("sliding" if i >= first else "full" for i in range(layers))
    return ("sliding" if window else "full",) * layers


def _rope(raw: dict, params: dict | None, theta: Any, scaling: dict | None) -> Rope:
    """A Rope from transformers 5 ``rope_parameters`` or from the older ``rope_theta`` + ``rope_scaling``."""
    p = dict(scaling or {})
    if params:
        p = {**p, **params}
    theta = float(p.get("rope_theta", theta if theta is not None else 10000.0))
    kind = p.get("rope_type") or p.get("type") or "default"
    if kind not in ROPE_TYPES:
        raise AiosError(f"unsupported RoPE scaling {kind!r}; supported: {', '.join(ROPE_TYPES)}")
    if float(p.get("partial_rotary_factor", raw.get("partial_rotary_factor", 1.0)) or 1.0) != 1.0:
        raise AiosError("partial rotary embeddings are not supported by the families aios imports")
    if kind == "default":
        return Rope(theta=theta)
    if kind == "linear":
        return Rope(theta=theta, kind="linear", factor=float(p["factor"]))
    return Rope(
        theta=theta,
        kind="llama3",
        factor=float(p["factor"]),
        low_freq_factor=float(p["low_freq_factor"]),
        high_freq_factor=float(p["high_freq_factor"]),
        original_context=int(p.get("original_max_position_embeddings") or raw.get("max_position_embeddings", 8192)),
    )


def _gemma_ropes(raw: dict) -> tuple[Rope, Rope]:
    """Gemma 3's global and local (sliding) RoPE, from either config spelling."""
    params = raw.get("rope_parameters") or {}
    if "full_attention" in params or "sliding_attention" in params:
        full = _rope(raw, params.get("full_attention") or {}, 1_000_000.0, None)
        local = _rope(raw, params.get("sliding_attention") or {}, 10_000.0, None)
        return full, local
    full = _rope(raw, params or None, raw.get("rope_theta", 1_000_000.0), raw.get("rope_scaling"))
    return full, Rope(theta=float(raw.get("rope_local_base_freq", 10_000.0)))


__all__ = ["LMConfig", "Rope", "ARCHITECTURES", "read_config", "from_hf", "from_dict", "supported"]
