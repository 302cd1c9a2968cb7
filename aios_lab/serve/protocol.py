"""The Open Inference Protocol (KServe V2) wire format: parse infer requests, build responses.

Covers JSON tensors (nested or flat ``data``), the binary tensor data extension
(``Inference-Header-Content-Length``, ``binary_data_size``, ``binary_data``, ``binary_data_output``,
raw single-input bodies), every V2 datatype including Triton's BF16, and gzip/deflate bodies.
Nothing here knows about HTTP servers or models beyond their signature; every problem with a
request raises a :class:`ProtocolError` (or a subclass that carries another HTTP status) with a
one-line message. :func:`parse_infer` also runs in the endpoint's helper process for large bodies.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass, field
from math import prod
from typing import Any

import ml_dtypes
import numpy as np
import orjson

from .errors import ProtocolError, TooLarge, UnsupportedEncoding

# V2 datatype -> numpy dtype (BYTES: object arrays of bytes).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "BYTES": np.dtype(object),
}
_BY_DTYPE = {dt: name for name, dt in DATATYPES.items() if name != "BYTES"}
_JSON_AS_FP32 = {"FP16", "BF16"}  # orjson cannot write these numpy types; their values are exact in FP32
_NARROW_FLOATS = {"FP16", "BF16", "FP32"}  # JSON numbers (float64) can overflow these to infinity
# _from_json checks for that overflow right after the cast (an errstate block would cost every request 2 us).
warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning, __name__)


def datatype_of(dtype: Any) -> str:
    """numpy dtype -> V2 datatype name."""
    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return "BYTES"
    try:
        return _BY_DTYPE[dt]
    except KeyError:
        raise TypeError(f"dtype {dt} has no V2 datatype") from None


# ---------------------------------------------------------------------------------------------
# bodies


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate`` (deflate = a zlib stream), refusing bombs over ``limit``."""
    if not encoding or encoding.strip().lower() in ("identity", ""):
        return body
    enc = encoding.strip().lower()
    if enc == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif enc == "deflate":
        d = zlib.decompressobj()
    else:
        raise UnsupportedEncoding(f"unsupported Content-Encoding {encoding!r}: send gzip, deflate or none")
    try:
        out = d.decompress(body, limit + 1)
        if len(out) > limit or d.unconsumed_tail:
            raise TooLarge(f"decompressed body is larger than the {limit}-byte limit")
        out += d.flush()
    except zlib.error as exc:
        raise ProtocolError(f"cannot decompress the {enc} body: {exc}") from None
    if not d.eof:
        raise ProtocolError(f"the {enc} body is truncated")
    return out


def compress(body: bytes, accept_encoding: str | None) -> tuple[bytes, str | None]:
    """Compress an infer response if the client asked for gzip or deflate (never br)."""
    if not accept_encoding:
        return body, None
    accepted = {part.split(";")[0].strip().lower() for part in accept_encoding.split(",")}
    if "gzip" in accepted:
        c = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return c.compress(body) + c.flush(), "gzip"
    if "deflate" in accepted:
        return zlib.compress(body, 1), "deflate"
    return body, None


def loads(body: bytes | memoryview, what: str = "request body") -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"malformed JSON in the {what}: {exc}") from None


def header_length(value: str | None, body_len: int) -> int | None:
    """Validate ``Inference-Header-Content-Length`` the way Triton does (never read past the body)."""
    if value is None:
        return None
    try:
        n = int(value.strip())
    except ValueError:
        raise ProtocolError(f"Unable to parse Inference-Header-Content-Length {value!r}") from None
    if n < 0 or n > body_len:
        raise ProtocolError(f"inference header size should be in range (0, {body_len}), got: {n}")
    return n


# ---------------------------------------------------------------------------------------------
# requests


@dataclass
class InferRequest:
    """A parsed, validated request: ``inputs`` in the signature's order, ``outputs`` to return."""

    id: str | None
    inputs: list[np.ndarray]
    rows: int
    outputs: list[tuple[int, bool]]  # (index in the signature's outputs, as binary?)
    parameters: dict = field(default_factory=dict)


def _parameters(obj: dict, where: str) -> dict:
    p = obj.get("parameters", {})
    if p is None:
        return {}
    if not isinstance(p, dict):
        raise ProtocolError(f"'parameters' of {where} must be an object")
    return p


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, list):
        for d in value:  # a plain loop: about twice as fast as all() over a generator for a few dims
            if type(d) is not int or d < 0:
                break
        else:
            return tuple(value)
    raise ProtocolError(f"'shape' of {where} must be a list of non-negative integers, got {value!r}")


def _check_against(spec: dict, shape: tuple[int, ...], where: str) -> None:
    want = spec["shape"]
    if len(shape) != len(want):
        _bad_shape(want, shape, where)
    for w, s in zip(want, shape):
        if w != -1 and w != s:
            _bad_shape(want, shape, where)


def _bad_shape(want: list, shape: tuple, where: str) -> None:
    shown = "[" + ",".join("N" if d == -1 else str(d) for d in want) + "]"
    raise ProtocolError(f"{where} has shape {list(shape)} but the model expects {shown}")


def _from_json(data: Any, shape: tuple[int, ...], datatype: str, where: str) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    n = prod(shape)
    try:
        if datatype == "BYTES":
            flat = np.asarray(data, dtype=object).ravel()
            flat = np.array([x.encode() if isinstance(x, str) else x for x in flat], dtype=object)
            if not all(isinstance(x, bytes) for x in flat):
                raise ValueError("BYTES elements must be strings")
        else:
            dt = DATATYPES[datatype]
            arr = np.asarray(data)
            kind = arr.dtype.kind
            if kind not in "biuf":
                raise ValueError(f"elements must be numbers{' or booleans' if datatype == 'BOOL' else ''}")
            if datatype == "BOOL" and kind != "b":
                raise ValueError("BOOL elements must be true or false")
            if dt.kind in "iu":
                if kind == "f":
                    raise ValueError(f"{datatype} elements must be integers")
                info = np.iinfo(dt)
                if arr.size and (arr.min() < info.min or arr.max() > info.max):
                    raise ValueError(f"a value is out of range for {datatype}")
            flat = arr.astype(dt, copy=False)  # any shape: only its size counts below, and reshape needs no ravel
            if datatype in _NARROW_FLOATS and not np.isfinite(flat).all():  # JSON has no infinity: it overflowed
                raise ValueError(f"a value is out of range for {datatype}")
    except (ValueError, TypeError, OverflowError) as exc:
        msg = str(exc).split("\n")[0]
        if "inhomogeneous" in msg or "sequence" in msg:
            msg = "nested 'data' lists are ragged"
        raise ProtocolError(f"bad 'data' for {where} ({datatype}): {msg}") from None
    if flat.size != n:
        raise ProtocolError(f"{where} has {flat.size} values in 'data' but shape {list(shape)} needs {n}")
    return flat.reshape(shape)


def _from_bytes(buf: memoryview, shape: tuple[int, ...], datatype: str, where: str) -> np.ndarray:
    n = prod(shape)
    if datatype == "BYTES":
        items, pos = [], 0
        while pos < len(buf):
            if pos + 4 > len(buf):
                raise ProtocolError(f"BYTES data of {where} ends inside a length prefix")
            ln = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
            if pos + ln > len(buf):
                raise ProtocolError(f"BYTES data of {where} is shorter than an element's length prefix says")
            items.append(bytes(buf[pos : pos + ln]))
            pos += ln
        if len(items) != n:
            raise ProtocolError(f"{where} has {len(items)} BYTES elements but shape {list(shape)} needs {n}")
        return np.array(items, dtype=object).reshape(shape)
    dt = DATATYPES[datatype]
    if len(buf) != n * dt.itemsize:
        raise ProtocolError(
            f"{where} has {len(buf)} bytes of binary data but shape {list(shape)} of {datatype} needs {n * dt.itemsize}"
        )
    return np.frombuffer(buf, dtype=dt).reshape(shape)


def parse_infer(body: bytes, ihcl: str | None, signature: dict, max_rows: int | None = None) -> InferRequest:
    """Parse an infer body (JSON, JSON + binary tensors, or raw bytes) against a model's signature.

    ``max_rows``: the most rows (batch axis) a request may carry; more is refused (413) before any data
    is converted."""
    hlen = header_length(ihcl, len(body))
    ins, outs = signature["inputs"], signature["outputs"]
    if hlen == 0:  # raw binary request: the whole body is the one input's bytes
        return _parse_raw(memoryview(body), ins, outs, max_rows)
    view = memoryview(body)
    header = loads(view if hlen is None else view[:hlen], "inference header")
    binary = view[len(view) :] if hlen is None else view[hlen:]
    if not isinstance(header, dict):
        raise ProtocolError("the inference request must be a JSON object")
    req_id = header.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise ProtocolError("'id' must be a string")
    params = _parameters(header, "the request")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("'inputs' must be a non-empty list of tensors")

    by_name: dict[str, np.ndarray] = {}
    offset = 0
    for i, t in enumerate(raw_inputs):
        if not isinstance(t, dict):
            raise ProtocolError(f"inputs[{i}] must be an object")
        name = t.get("name")
        if not isinstance(name, str):
            raise ProtocolError(f"inputs[{i}] needs a string 'name'")
        where = f"input {name!r}"
        spec = ins[0] if ins[0]["name"] == name else next((s for s in ins if s["name"] == name), None)
        if spec is None:
            raise ProtocolError(
                f"unknown input {name!r}: the model's inputs are {', '.join(repr(s['name']) for s in ins)}"
            )
        if name in by_name:
            raise ProtocolError(f"input {name!r} is given twice")
        datatype = t.get("datatype")
        if datatype not in DATATYPES:
            raise ProtocolError(f"{where} has unknown datatype {datatype!r}; V2 datatypes are {', '.join(DATATYPES)}")
        if datatype != spec["datatype"]:
            raise ProtocolError(f"{where} is {datatype} but the model expects {spec['datatype']}")
        shape = _shape(t.get("shape"), where)
        _check_against(spec, shape, where)
        if max_rows is not None and spec["shape"][0] == -1 and shape[0] > max_rows:
            _too_many_rows(shape[0], max_rows)
        p = _parameters(t, where)
        size = p.get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0:
                raise ProtocolError(f"'binary_data_size' of {where} must be a non-negative integer")
            if "data" in t:
                raise ProtocolError(f"{where} has both 'data' and 'binary_data_size'")
            if hlen is None:
                raise ProtocolError(
                    f"{where} has 'binary_data_size' but the request has no Inference-Header-Content-Length header"
                )
            if offset + size > len(binary):
                raise ProtocolError(
                    f"binary data of {where} runs past the end of the body "
                    f"({offset + size} > {len(binary)} bytes after the header)"
                )
            arr = _from_bytes(binary[offset : offset + size], shape, datatype, where)
            offset += size
        else:
            if "data" not in t:
                raise ProtocolError(f"{where} has neither 'data' nor 'binary_data_size'")
            arr = _from_json(t["data"], shape, datatype, where)
        by_name[name] = arr
    if offset != len(binary):
        raise ProtocolError(f"the body has {len(binary) - offset} bytes of binary data that no input declares")
    if len(by_name) != len(ins):  # by_name holds only distinct known inputs, so equal counts = none missing
        missing = [s["name"] for s in ins if s["name"] not in by_name]
        raise ProtocolError(f"missing input(s) {', '.join(map(repr, missing))}")
    inputs = [by_name[s["name"]] for s in ins]
    rows = _rows(inputs, ins)

    binary_default = params.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise ProtocolError("'binary_data_output' must be true or false")
    raw_outputs = header.get("outputs")
    if raw_outputs is None:
        outputs = [(k, binary_default) for k in range(len(outs))]
    else:
        if not isinstance(raw_outputs, list):
            raise ProtocolError("'outputs' must be a list")
        outputs = []
        for i, o in enumerate(raw_outputs):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise ProtocolError(f"outputs[{i}] needs a string 'name'")
            k = next((k for k, s in enumerate(outs) if s["name"] == o["name"]), None)
            if k is None:
                raise ProtocolError(
                    f"unknown output {o['name']!r}: the model's outputs are {', '.join(repr(s['name']) for s in outs)}"
                )
            as_binary = _parameters(o, f"output {o['name']!r}").get("binary_data", binary_default)
            if not isinstance(as_binary, bool):
                raise ProtocolError(f"'binary_data' of output {o['name']!r} must be true or false")
            outputs.append((k, as_binary))
    return InferRequest(req_id, inputs, rows, outputs, params)


def _rows(inputs: list[np.ndarray], specs: list[dict]) -> int:
    rows = {a.shape[0] for a, s in zip(inputs, specs) if s["shape"] and s["shape"][0] == -1}
    if len(rows) > 1:
        raise ProtocolError(f"inputs disagree on the batch size: {sorted(rows)}")
    n = rows.pop() if rows else 1
    if n == 0:
        raise ProtocolError("the batch is empty (0 rows)")
    return n


def _too_many_rows(rows: int, max_rows: int) -> None:
    raise TooLarge(
        f"the request has {rows} rows; this endpoint takes at most {max_rows} per request "
        "(split it, or start the endpoint with a larger --max-rows)"
    )


def _parse_raw(body: memoryview, ins: list[dict], outs: list[dict], max_rows: int | None) -> InferRequest:
    if len(ins) != 1:
        raise ProtocolError(
            "a raw binary request (Inference-Header-Content-Length: 0) needs a model "
            f"with exactly one input; this one has {len(ins)}"
        )
    spec = ins[0]
    if spec["datatype"] == "BYTES":
        raise ProtocolError("raw binary requests are not supported for BYTES inputs here")
    dt = DATATYPES[spec["datatype"]]
    per_row = prod(d for d in spec["shape"][1:]) * dt.itemsize
    if spec["shape"][:1] != [-1] or any(d == -1 for d in spec["shape"][1:]):
        raise ProtocolError("raw binary requests need an input with only a variable batch axis")
    if per_row == 0 or len(body) == 0 or len(body) % per_row:
        raise ProtocolError(
            f"a raw binary body must be a whole number of {per_row}-byte rows of "
            f"{spec['datatype']} {spec['shape'][1:]}; got {len(body)} bytes"
        )
    n = len(body) // per_row
    if max_rows is not None and n > max_rows:
        _too_many_rows(n, max_rows)
    arr = np.frombuffer(body, dtype=dt).reshape((n, *spec["shape"][1:]))
    return InferRequest(None, [arr], n, [(k, True) for k in range(len(outs))])


# ---------------------------------------------------------------------------------------------
# responses


def _tensor_bytes(arr: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for x in arr.ravel():
            b = x if isinstance(x, bytes) else str(x).encode()
            parts += [len(b).to_bytes(4, "little"), b]
        return b"".join(parts)
    return np.ascontiguousarray(arr).tobytes()


def _json_data(arr: np.ndarray, datatype: str) -> Any:
    if datatype in _JSON_AS_FP32:
        return np.ascontiguousarray(arr, dtype=np.float32).ravel()
    if datatype == "BYTES":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in arr.ravel()]
    return np.ascontiguousarray(arr).ravel()


def encode_response(
    model: str, version: str, req: InferRequest, results: list[np.ndarray], out_specs: list[dict]
) -> tuple[bytes, int | None]:
    """Build the response body; returns ``(body, json_header_length or None if all-JSON)``."""
    outputs, chunks = [], []
    for k, as_binary in req.outputs:
        arr = results[k]
        datatype = out_specs[k]["datatype"]
        o: dict[str, Any] = {"name": out_specs[k]["name"], "datatype": datatype, "shape": list(arr.shape)}
        if as_binary:
            b = _tensor_bytes(arr, datatype)
            o["parameters"] = {"binary_data_size": len(b)}
            chunks.append(b)
        else:
            o["data"] = _json_data(arr, datatype)
        outputs.append(o)
    doc: dict[str, Any] = {"model_name": model, "model_version": version}
    if req.id is not None:
        doc["id"] = req.id
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
