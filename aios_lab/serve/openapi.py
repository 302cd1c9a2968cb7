"""The OpenAPI 3.0 description of the server, served at ``/openapi.json``; every status a route answers is declared."""

from __future__ import annotations

from typing import Any

ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
PARAMETERS = {
    "type": "object",
    "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]},
}
TENSOR_META = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
}
DATATYPE = {
    "type": "string",
    "enum": [
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BF16",
        "BYTES",
    ],
}
INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": PARAMETERS,
        "inputs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string"},
                    "datatype": DATATYPE,
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "parameters": PARAMETERS,
                    "data": {
                        "description": "row-major tensor data, flat or nested; absent when "
                        "parameters.binary_data_size is given"
                    },
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": PARAMETERS},
            },
        },
    },
}
INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": PARAMETERS,
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "datatype": {"type": "string"},
                    "parameters": PARAMETERS,
                    "data": {},
                },
            },
        },
    },
}
MODEL_META = {
    "type": "object",
    "required": ["name", "platform", "inputs", "outputs"],
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": TENSOR_META},
        "outputs": {"type": "array", "items": TENSOR_META},
    },
}
SERVER_META = {
    "type": "object",
    "required": ["name", "version", "extensions"],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "extensions": {"type": "array", "items": {"type": "string"}},
    },
}
INDEX = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name", "state"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "state": {"type": "string"},
            "reason": {"type": "string"},
        },
    },
}

STATUS_TEXT = {
    400: "Bad request: malformed JSON, wrong tensor name, shape, datatype or data",
    401: "Missing or invalid bearer token",
    403: "The token's role may not use this route",
    404: "Unknown route, model or version",
    405: "Method not allowed",
    408: "The request body did not arrive in time (the connection is closed)",
    413: "Request body over the size limit, or more rows than the endpoint takes per request",
    415: "Unsupported Content-Encoding",
    429: "Back-pressure: the model's queue or the parser is full; retry after the Retry-After header's seconds",
    500: "The forward pass or the generation failed",
    501: "Not supported by this server",
    503: "The server is starting or draining, or its parsing helper restarted; retry after Retry-After seconds",
}


CANARY = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "version": {"type": "integer"},
        "percent": {"type": "number"},
        "state": {"type": "string", "enum": ["running", "ended"]},
        "arms": {"type": "object"},
    },
    "required": ["model", "version", "percent", "state", "arms"],
}
CANARY_BODY = {
    "type": "object",
    "properties": {
        "version": {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string"}]},
        "percent": {"type": "number", "minimum": 0, "maximum": 100},
        "end": {"type": "boolean"},
    },
    "additionalProperties": False,
}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _responses(ok: dict, *statuses: int, error: dict = ERROR) -> dict:
    out = {"200": ok}
    for s in statuses:
        out[str(s)] = {"description": STATUS_TEXT[s], "content": _json(error)}
        if s in (429, 503):
            out[str(s)]["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}
    return out


def _op(
    summary: str,
    ok: dict,
    statuses: tuple,
    body: dict | None = None,
    *,
    auth: bool = True,
    op_id: str,
    error: dict = ERROR,
) -> dict:
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": op_id,
        "responses": _responses(ok, *((401,) if auth else ()), *statuses, 405, error=error),
    }
    if not auth:
        op["security"] = []
    if body is not None:
        op["requestBody"] = body
    return op


def _path_params(*names: str) -> list[dict]:
    return [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names]


def document(version: str) -> dict:
    """The OpenAPI document (schemathesis fuzzes the server against it)."""
    meta_ok = {"description": "Model metadata", "content": _json(MODEL_META)}
    ready_ok = {
        "description": "The model is ready",
        "content": _json({"type": "object", "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}}),
    }
    config_ok = {
        "description": "Model configuration (Triton's model configuration as JSON)",
        "content": _json({"type": "object"}),
    }
    infer_ok = {
        "description": "Inference result; application/octet-stream (JSON header + binary tensors, "
        "Inference-Header-Content-Length) when any output is binary",
        "content": {
            **_json(INFER_RESPONSE),
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    infer_body = {
        "required": True,
        "content": {
            **_json(INFER_REQUEST),
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    model_statuses = (404,)
    paths: dict[str, dict] = {}
    for prefix, params in (
        ("/v2/models/{model_name}", ("model_name",)),
        ("/v2/models/{model_name}/versions/{model_version}", ("model_name", "model_version")),
    ):
        suffix = "_version" if len(params) == 2 else ""
        paths[prefix] = {
            "parameters": _path_params(*params),
            "get": _op("Model metadata", meta_ok, model_statuses, op_id="model_metadata" + suffix),
        }
        paths[prefix + "/ready"] = {
            "parameters": _path_params(*params),
            "get": _op("Model readiness", ready_ok, model_statuses, op_id="model_ready" + suffix),
        }
        paths[prefix + "/config"] = {
            "parameters": _path_params(*params),
            "get": _op("Model configuration", config_ok, model_statuses, op_id="model_config" + suffix),
        }
        paths[prefix + "/infer"] = {
            "parameters": _path_params(*params),
            "post": _op(
                "Inference (JSON or binary tensor data)",
                infer_ok,
                (400, 404, 408, 413, 415, 429, 500, 503),
                infer_body,
                op_id="infer" + suffix,
            ),
        }
    repo_body = {
        "required": False,
        "content": _json(
            {
                "type": "object",
                "properties": {
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "version": {
                                "type": "string",
                                "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$",
                                "description": "a version number or an alias (default: the model's default route)",
                            }
                        },
                    }
                },
            }
        ),
    }
    repo_statuses = (400, 403, 404, 408, 413, 415)
    paths.update(
        {
            "/v2/health/live": {
                "get": _op(
                    "Server liveness",
                    {
                        "description": "Live",
                        "content": _json({"type": "object", "properties": {"live": {"type": "boolean"}}}),
                    },
                    (),
                    auth=False,
                    op_id="live",
                )
            },
            "/v2/health/ready": {
                "get": _op(
                    "Server readiness",
                    {
                        "description": "Ready",
                        "content": _json({"type": "object", "properties": {"ready": {"type": "boolean"}}}),
                    },
                    (503,),
                    auth=False,
                    op_id="ready",
                )
            },
            "/v2": {
                "get": _op(
                    "Server metadata",
                    {"description": "Server metadata", "content": _json(SERVER_META)},
                    (),
                    op_id="server_metadata",
                )
            },
            "/v2/repository/index": {
                "post": _op(
                    "Model repository index (admin)",
                    {"description": "Models and their states", "content": _json(INDEX)},
                    repo_statuses,
                    {
                        "required": False,
                        "content": _json({"type": "object", "properties": {"ready": {"type": "boolean"}}}),
                    },
                    op_id="repository_index",
                )
            },
            "/v2/repository/models/{model_name}/load": {
                "parameters": _path_params("model_name"),
                "post": _op(
                    "Load or reload a model; a new version is warmed up before it takes traffic (admin)",
                    {"description": "Loaded", "content": _json({"type": "object"})},
                    (*repo_statuses, 501),
                    repo_body,
                    op_id="repository_load",
                ),
            },
            "/v2/repository/models/{model_name}/unload": {
                "parameters": _path_params("model_name"),
                "post": _op(
                    "Unload a model; requests in flight finish (admin)",
                    {"description": "Unloaded", "content": _json({"type": "object"})},
                    repo_statuses,
                    {
                        "required": False,
                        "content": _json({"type": "object", "properties": {"parameters": {"type": "object"}}}),
                    },
                    op_id="repository_unload",
                ),
            },
            "/v2/repository/models/{model_name}/canary": {
                "parameters": _path_params("model_name"),
                "get": _op(
                    "The model's latest canary here: candidate, percent, requests and errors per arm (admin)",
                    {"description": "The canary", "content": _json(CANARY)},
                    (403, 404),
                    op_id="canary_state",
                ),
                "post": _op(
                    "Start or change a canary (version, percent of the unversioned route), or end it (admin)",
                    {"description": "The canary", "content": _json(CANARY)},
                    repo_statuses,
                    {"required": False, "content": _json(CANARY_BODY)},
                    op_id="canary_set",
                ),
            },
            "/metrics": {
                "get": _op(
                    "Prometheus metrics",
                    {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    (),
                    op_id="metrics",
                )
            },
            "/openapi.json": {
                "get": _op(
                    "This document",
                    {"description": "OpenAPI 3.0", "content": _json({"type": "object"})},
                    (),
                    op_id="openapi",
                )
            },
        }
    )
    from .llm.openapi import paths as llm_paths

    paths.update(llm_paths())
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "aios_lab inference server (Open Inference Protocol / KServe V2, OpenAI-compatible for LMs)",
            "version": version,
            "description": 'Every non-200 response body is {"error": "..."}, and on the /v1 routes OpenAI\'s '
            '{"error": {"message", "type", "param", "code"}}. Binary tensor data: see the '
            "binary_tensor_data extension (Inference-Header-Content-Length).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }
