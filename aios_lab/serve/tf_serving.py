"""TensorFlow Serving's REST API, on a port of its own in the same server process (``--tf-serving-port 8501``).

It needs its own port because ``GET /v1/models/{m}`` already means "retrieve a model" in the OpenAI API on
the V2 port. It serves the same loaded versions, batchers, canaries, tokens and metrics as the V2 routes:

    GET  /v1/models/M[/versions/V|/labels/L]              version status (GetModelStatusResponse)
    GET  /v1/models/M[/versions/V|/labels/L]/metadata     signature (GetModelMetadataResponse)
    POST /v1/models/M[/versions/V|/labels/L]:predict      {"instances": ...} -> {"predictions": ...}
                                                          {"inputs": ...}    -> {"outputs": ...}

Labels are the registry's aliases; without a version or label the route serves what the V2 route
``/v2/models/M`` serves (``production`` when the model has it, else the newest version; a canary splits
it). Errors are TF Serving's ``{"error": "..."}``. ``NaN``, ``Infinity`` and ``-Infinity`` are accepted in
request bodies, as TF Serving does. Not covered: ``:classify`` and ``:regress`` (501), ``{"b64": ...}``
binary strings, string tensors, and signatures other than ``serving_default``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from ..errors import AiosError
from .errors import MethodNotAllowed, NoRoute, NotSupported, ProtocolError, TooLarge, Unavailable
from .http import Disconnected, Request, Response, error_response, ok
from .protocol import DATATYPES
from .routes import inflate

if TYPE_CHECKING:
    from .app import V2App
    from .repository import Served

log = logging.getLogger("aios_lab.serve")

SIGNATURE = "serving_default"
METHOD = "tensorflow/serving/predict"
# V2 datatype -> TensorFlow's DataType enum name
TF_DTYPES = {
    "BOOL": "DT_BOOL",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    "BF16": "DT_BFLOAT16",
    "BYTES": "DT_STRING",
}


# -- request bodies --------------------------------------------------------------------------------------


def load_json(body: bytes | bytearray) -> Any:
    """JSON, with the ``NaN``/``Infinity`` tokens TF Serving accepts (the standard library reads those)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            return json.loads(bytes(body))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"the request body is not JSON: {exc}") from None


def _tensor(value: Any, spec: dict, where: str) -> np.ndarray:
    """``value`` (nested lists) as an array of ``spec``'s datatype; a ragged or non-numeric value is a 400."""
    try:
        arr = np.asarray(value)
    except ValueError:
        raise ProtocolError(f"{where} is ragged: every element along each axis must have the same shape") from None
    if arr.dtype == object or arr.dtype.kind in "SU":
        if _ragged(value):
            raise ProtocolError(f"{where} is ragged: every element along each axis must have the same shape")
        raise ProtocolError(f"{where} must hold numbers or true/false; strings and b64 objects are not supported")
    want = DATATYPES[spec["datatype"]]
    if arr.dtype.kind == "f" and want.kind in "iub":
        raise ProtocolError(f"{where} holds fractional numbers, but input {spec['name']!r} is {spec['datatype']}")
    if arr.dtype.kind == "b" and want.kind != "b":
        arr = arr.astype(np.uint8)
    return arr.astype(want, copy=False)


def _ragged(value: Any) -> bool:
    if not isinstance(value, list):
        return False
    shapes = set()
    for v in value:
        try:
            shapes.add(np.shape(v))
        except ValueError:
            return True
        if _ragged(v):
            return True
    return len(shapes) > 1


def _check_shape(arr: np.ndarray, spec: dict, where: str) -> None:
    want = spec["shape"][1:]
    got = arr.shape[1:]
    if len(got) != len(want) or any(w not in (-1, g) for w, g in zip(want, got)):
        shown = "[" + ", ".join("?" if w == -1 else str(w) for w in want) + "]"
        raise ProtocolError(f"{where} has shape {list(got)} per instance; input {spec['name']!r} takes {shown}")


def parse_predict(doc: Any, signature: dict, max_rows: int) -> tuple[list[np.ndarray], int, str]:
    """A predict body -> (one array per signature input, rows, "row" | "columnar")."""
    if not isinstance(doc, dict):
        raise ProtocolError('the request body must be a JSON object with "instances" or "inputs"')
    name = doc.get("signature_name")
    if name not in (None, "", SIGNATURE):
        raise ProtocolError(f"serving signature name {name!r} not found: this model has only {SIGNATURE!r}")
    if "instances" in doc and "inputs" in doc:
        raise ProtocolError(
            'a request has "instances" (row format) or "inputs" (columnar format), not both: send one of them'
        )
    specs = signature["inputs"]
    names = [s["name"] for s in specs]
    if "instances" in doc:
        instances = doc["instances"]
        if not isinstance(instances, list) or not instances:
            raise ProtocolError('"instances" must be a non-empty list, one element per instance')
        if len(instances) > max_rows:
            raise TooLarge(f"{len(instances)} instances are over this endpoint's --max-rows of {max_rows}")
        if any(isinstance(i, dict) for i in instances):
            if not all(isinstance(i, dict) and set(i) == set(names) for i in instances):
                raise ProtocolError(f"every instance must be an object with exactly the inputs {names}")
            columns = {n: [i[n] for i in instances] for n in names}
        elif len(specs) == 1:
            columns = {names[0]: instances}
        else:
            raise ProtocolError(f"this model has {len(names)} inputs: give each instance as an object {names}")
        fmt = "row"
        label = lambda n: '"instances"' if len(names) == 1 else f'"instances" input {n!r}'
    elif "inputs" in doc:
        given = doc["inputs"]
        if isinstance(given, dict) and (len(specs) > 1 or set(given) == set(names)):
            if set(given) != set(names):
                raise ProtocolError(f'"inputs" must name exactly the inputs {names}, got {sorted(given)}')
            columns = given
        elif len(specs) == 1:
            columns = {names[0]: given}
        else:
            raise ProtocolError(f'this model has {len(names)} inputs: give "inputs" as an object {names}')
        fmt = "columnar"
        label = lambda n: f'"inputs" {n!r}'
    else:
        raise ProtocolError('the request body needs "instances" (row format) or "inputs" (columnar format)')
    arrays, rows = [], None
    for spec in specs:
        arr = _tensor(columns[spec["name"]], spec, label(spec["name"]))
        if arr.ndim == 0:
            raise ProtocolError(f"{label(spec['name'])} must be a list with one element per instance")
        _check_shape(arr, spec, label(spec["name"]))
        if rows is not None and arr.shape[0] != rows:
            raise ProtocolError(
                f"every input needs the same number of instances ({rows}); {spec['name']!r} has {arr.shape[0]}"
            )
        rows = arr.shape[0]
        arrays.append(arr)
    if not rows:
        raise ProtocolError("the request holds no instances")
    if rows > max_rows:
        raise TooLarge(f"{rows} instances are over this endpoint's --max-rows of {max_rows}")
    return arrays, int(rows), fmt


def encode_predict(fmt: str, outputs: list[np.ndarray], specs: list[dict]) -> bytes:
    """``{"predictions": ...}`` (row) or ``{"outputs": ...}`` (columnar); named only when there are several."""
    narrow = lambda o: o.dtype.kind == "V" or (o.dtype.kind == "f" and o.dtype.itemsize < 4)  # FP16, BF16
    outs = [np.ascontiguousarray(o.astype(np.float32) if narrow(o) else o) for o in outputs]
    if fmt == "row":
        if len(outs) == 1:
            doc: Any = {"predictions": outs[0]}
        else:
            doc = {"predictions": [{s["name"]: o[i] for s, o in zip(specs, outs)} for i in range(len(outs[0]))]}
    elif len(outs) == 1:
        doc = {"outputs": outs[0]}
    else:
        doc = {"outputs": {s["name"]: o for s, o in zip(specs, outs)}}
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


# -- documents ---------------------------------------------------------------------------------------------


def tensor_info(spec: dict) -> dict:
    """A TensorInfo as TF Serving's JSON writes it (dimension sizes are strings: int64 in proto3 JSON)."""
    return {
        "dtype": TF_DTYPES.get(spec["datatype"], "DT_INVALID"),
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in spec["shape"]], "unknown_rank": False},
        "name": spec["name"],
    }


def metadata(served: Served) -> dict:
    """GetModelMetadataResponse with the ``signature_def`` metadata field."""
    sig = served.signature
    return {
        "model_spec": {"name": served.name, "signature_name": "", "version": served.vstr},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    SIGNATURE: {
                        "inputs": {s["name"]: tensor_info(s) for s in sig["inputs"]},
                        "outputs": {s["name"]: tensor_info(s) for s in sig["outputs"]},
                        "method_name": METHOD,
                    }
                }
            }
        },
    }


def version_status(versions: list[int]) -> dict:
    """GetModelStatusResponse: every listed version AVAILABLE (only loaded versions are listed)."""
    ok_status = {"error_code": "OK", "error_message": ""}
    return {
        "model_version_status": [
            {"version": str(v), "state": "AVAILABLE", "status": ok_status} for v in sorted(versions, reverse=True)
        ]
    }


# -- the ASGI app ------------------------------------------------------------------------------------------


class TFServingApp:
    """The TF Serving REST routes over a :class:`V2App`'s models, tokens, canaries and metrics."""

    def __init__(self, app: V2App):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return  # lifespan belongs to the V2 app, which starts and stops the models
        t0 = time.perf_counter()
        req = Request(scope, receive, t0)
        ctx = ["tf_other", "", ""]
        try:
            resp = self.dispatch(req, ctx)
            if not isinstance(resp, Response):
                resp = await resp
        except Disconnected:
            resp = None
        except Exception as exc:
            if not isinstance(exc, AiosError):
                log.exception("error handling %s %s", req.method, req.path)
            resp = error_response(exc)
        status = 499 if resp is None else resp.status
        sent = 0
        if resp is not None:
            sent = len(resp.body)
            headers = resp.headers + [(b"content-length", str(sent).encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": resp.body})
        self.app.observed(req, ctx, status, time.perf_counter() - t0, sent)

    def dispatch(self, req: Request, ctx: list) -> Any:
        path = req.path
        if not path.startswith("/v1/models/"):
            raise NoRoute(f"no route {path}: TF Serving's REST API is under /v1/models/")
        rest, colon, verb = path[11:].partition(":")
        parts = rest.split("/")
        name, ref, tail = parts[0], None, parts[1:]
        if len(tail) >= 2 and tail[0] in ("versions", "labels"):
            ref = tail[1]
            if not ref or (tail[0] == "versions" and not ref.isdecimal()):
                raise ProtocolError(f"{tail[0]}/{ref!r}: a version is a number, a label is an alias such as production")
            tail = tail[2:]
        if not name or (colon and tail) or tail not in ([], ["metadata"]):
            raise NoRoute(f"no route {path}")
        app = self.app
        if not app.ready:
            raise Unavailable("server is starting")
        if colon:
            if verb in ("classify", "regress"):
                raise NotSupported(f":{verb} is not supported here; use :predict")
            if verb != "predict":
                raise NoRoute(f"no route {path}: the verb is :predict")
            ctx[0] = "tf_predict"
            self._method(req, "POST")
        else:
            ctx[0] = "tf_metadata" if tail else "tf_status"
            self._method(req, "GET")
        app.router.auth(req, model=name)
        repo = app.repository
        if ctx[0] == "tf_status" and ref is None:
            if name not in repo.entries:
                repo.route(name, None)  # the 404 that says what is loaded
            ctx[1] = name
            return ok(version_status(list(repo.entries[name].versions)))
        served = repo.route(name, str(int(ref)) if ref is not None and ref.isdecimal() else ref)
        ctx[1], ctx[2] = name, served.vstr
        if ctx[0] == "tf_status":
            return ok(version_status([served.version]))
        if served.engine is not None:
            raise ProtocolError(f"model {name!r} is a language model: use /v2/models/{name}/generate on the V2 port")
        if ctx[0] == "tf_metadata":
            return ok(metadata(served))
        if ref is None and app.canary.active:
            served, canary, arm = app.canary.pick(name, served, req)
            if canary is not None:
                ctx[2] = served.vstr
                return app.canary.observe(self._predict(req, served), canary, arm, served, req.t0)
        return self._predict(req, served)

    @staticmethod
    def _method(req: Request, allowed: str) -> None:
        if req.method != allowed:
            raise MethodNotAllowed(allowed)

    async def _predict(self, req: Request, served: Served) -> Response:
        app, cfg = self.app, self.app.settings
        body = await req.body(cfg.max_body_bytes, cfg.body_timeout_s, app.deadlines)
        if req.content_encoding:
            body = await inflate(body, req.content_encoding, cfg.max_body_bytes)
        if len(body) >= cfg.offload_bytes:  # a large body: parsed off the event loop
            inputs, rows, fmt = await asyncio.to_thread(_parse, body, served.signature, cfg.max_rows)
        else:
            inputs, rows, fmt = _parse(body, served.signature, cfg.max_rows)
        results = await served.batcher.submit(inputs, rows)
        return Response(200, encode_predict(fmt, results, served.signature["outputs"]))


def _parse(body: bytes | bytearray, signature: dict, max_rows: int) -> tuple[list[np.ndarray], int, str]:
    return parse_predict(load_json(body), signature, max_rows)


# -- running it beside the V2 server -----------------------------------------------------------------------


def serve_both(primary: Any, app: V2App, **ssl: Any) -> None:
    """Run the V2 server ``primary`` (a ``uvicorn.Server``) and the TF Serving port in one event loop; the
    TF Serving port stops when the V2 server does (SIGTERM drains both)."""
    import uvicorn

    s = app.settings

    class Secondary(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # the primary server owns SIGTERM/SIGINT
            yield

        async def on_tick(self, counter: int) -> bool:
            return primary.should_exit or await super().on_tick(counter)

    cfg = uvicorn.Config(
        TFServingApp(app),
        host=s.host,
        port=s.tf_serving_port,
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=s.drain_timeout_s,
        timeout_keep_alive=30,
        **ssl,
    )

    async def both() -> None:
        await asyncio.gather(primary.serve(), Secondary(cfg).serve())

    asyncio.run(both())


__all__ = ["TFServingApp", "parse_predict", "encode_predict", "metadata", "version_status", "serve_both"]
