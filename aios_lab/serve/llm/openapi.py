"""The language-model routes in the server's OpenAPI document (merged into ``/openapi.json``)."""

from __future__ import annotations

from ..openapi import PARAMETERS, _json, _op, _path_params
from .params import MAX_STOP, ROLES

OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": "string", "nullable": True},
                "code": {"type": "string", "nullable": True},
            },
        }
    },
}
SAMPLING = {
    "max_tokens": {"type": "integer", "minimum": 1},
    "max_completion_tokens": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 1},
    "top_k": {"type": "integer", "minimum": -1},
    "seed": {"type": "integer"},
    "n": {"type": "integer", "minimum": 1},
    "stop": {
        "oneOf": [{"type": "string"}, {"type": "array", "maxItems": MAX_STOP, "items": {"type": "string"}}],
        "nullable": True,
    },
    "stream": {"type": "boolean"},
    "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
}
CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "description": "NAME, NAME:VERSION or NAME:ALIAS (GET /v1/models)"},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {"role": {"type": "string", "enum": list(ROLES)}, "content": {"type": "string"}},
            },
        },
        **SAMPLING,
    },
}
COMPLETION_REQUEST = {
    "type": "object",
    "required": ["model", "prompt"],
    "properties": {
        "model": CHAT_REQUEST["properties"]["model"],
        "prompt": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "minItems": 1, "items": {"type": "string"}},
                {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
            ]
        },
        **SAMPLING,
    },
}
USAGE = {
    "type": "object",
    "properties": {n: {"type": "integer"} for n in ("prompt_tokens", "completion_tokens", "total_tokens")},
}
COMPLETION_RESPONSE = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string"},
        "created": {"type": "integer"},
        "model": {"type": "string", "description": "the version that answered: NAME:VERSION"},
        "choices": {"type": "array", "items": {"type": "object"}},
        "usage": USAGE,
    },
}
MODEL_LIST = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {"object": {"type": "string"}, "data": {"type": "array", "items": {"type": "object"}}},
}
GENERATE_REQUEST = {
    "type": "object",
    "required": ["text_input"],
    "properties": {"text_input": {"type": "string"}, "parameters": PARAMETERS},
}
GENERATE_RESPONSE = {
    "type": "object",
    "required": ["model_name", "model_version", "text_output"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "text_output": {"type": "string"},
        "finish_reason": {"type": "string"},
    },
}
STREAM = {"text/event-stream": {"schema": {"type": "string"}}}
GENERATION_STATUSES = (400, 403, 404, 408, 413, 415, 429, 500, 503)


def paths() -> dict[str, dict]:
    """``/v1/...`` and ``.../generate[_stream]`` (with and without ``/versions/{model_version}``)."""
    out: dict[str, dict] = {}

    def body(schema: dict) -> dict:
        return {"required": True, "content": _json(schema)}

    def answer(what: str, schema: dict, streamed: bool) -> dict:
        content = {**_json(schema), **(STREAM if streamed else {})}
        return {"description": what + ("; with stream: server-sent events" if streamed else ""), "content": content}

    v1 = dict(error=OPENAI_ERROR)
    out["/v1/models"] = {
        "get": _op("Language models served", answer("Models", MODEL_LIST, False), (), op_id="v1_models", **v1)
    }
    out["/v1/models/{model}"] = {
        "parameters": _path_params("model"),
        "get": _op(
            "One language model", answer("Model", {"type": "object"}, False), (400, 403, 404), op_id="v1_model", **v1
        ),
    }
    out["/v1/chat/completions"] = {
        "post": _op(
            "Chat completion through the model's chat template (stream: SSE, then data: [DONE])",
            answer("Chat completion", COMPLETION_RESPONSE, True),
            GENERATION_STATUSES,
            body(CHAT_REQUEST),
            op_id="v1_chat_completions",
            **v1,
        )
    }
    out["/v1/completions"] = {
        "post": _op(
            "Text completion (stream: SSE, then data: [DONE])",
            answer("Completion", COMPLETION_RESPONSE, True),
            GENERATION_STATUSES,
            body(COMPLETION_REQUEST),
            op_id="v1_completions",
            **v1,
        )
    }
    for prefix, names in (
        ("/v2/models/{model_name}", ("model_name",)),
        ("/v2/models/{model_name}/versions/{model_version}", ("model_name", "model_version")),
    ):
        suffix = "_version" if len(names) == 2 else ""
        for route, streamed in (("generate", False), ("generate_stream", True)):
            out[f"{prefix}/{route}"] = {
                "parameters": _path_params(*names),
                "post": _op(
                    "Generate extension: text_input -> text_output" + (" (server-sent events)" if streamed else ""),
                    {"description": "Generated text", "content": STREAM if streamed else _json(GENERATE_RESPONSE)},
                    GENERATION_STATUSES,
                    body(GENERATE_REQUEST),
                    op_id=route + suffix,
                ),
            }
    return out


__all__ = ["paths", "OPENAI_ERROR"]
