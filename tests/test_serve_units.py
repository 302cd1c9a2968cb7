"""The wire format and the batcher on their own: datatypes (BF16, BOOL, BYTES), binary layouts, limits,
bucket padding and exact row hand-back. No server, no model files: fast."""

from __future__ import annotations

import asyncio
import gzip

import ml_dtypes
import numpy as np
import orjson
import pytest

from aios_lab.serve.batching import Batcher, buckets_for
from aios_lab.serve.protocol import DATATYPES, ProtocolError, decompress, encode_response, parse_infer


def sig(datatype="FP32", shape=(-1, 3), out_datatype=None):
    return {
        "inputs": [{"name": "x", "datatype": datatype, "shape": list(shape)}],
        "outputs": [{"name": "y", "datatype": out_datatype or datatype, "shape": list(shape)}],
    }


def binary(header: dict, *chunks: bytes) -> tuple[bytes, str]:
    h = orjson.dumps(header)
    return h + b"".join(chunks), str(len(h))


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "BYTES"])
def test_every_numeric_datatype_round_trips_in_binary(datatype):
    dt = DATATYPES[datatype]
    x = (np.arange(6) % 2).astype(dt).reshape(2, 3)
    body, n = binary(
        {
            "inputs": [
                {"name": "x", "shape": [2, 3], "datatype": datatype, "parameters": {"binary_data_size": x.nbytes}}
            ]
        },
        x.tobytes(),
    )
    req = parse_infer(body, n, sig(datatype))
    assert req.inputs[0].dtype == dt and req.rows == 2
    np.testing.assert_array_equal(req.inputs[0], x)
    req.outputs = [(0, True)]
    out, hlen = encode_response("m", "1", req, [x], sig(datatype)["outputs"])
    head = orjson.loads(out[:hlen])
    assert head["outputs"][0]["datatype"] == datatype
    np.testing.assert_array_equal(np.frombuffer(out[hlen:], dt).reshape(2, 3), x)


def test_bf16_json_in_and_out():
    x = np.array([[1.5, -2.0, 0.25]], ml_dtypes.bfloat16)
    req = parse_infer(
        orjson.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "BF16", "data": [1.5, -2.0, 0.25]}]}),
        None,
        sig("BF16"),
    )
    assert req.inputs[0].dtype == ml_dtypes.bfloat16
    out, hlen = encode_response("m", "1", req, [x], sig("BF16")["outputs"])
    assert hlen is None and orjson.loads(out)["outputs"][0]["data"] == [1.5, -2.0, 0.25]


def test_bytes_binary_layout():
    b = len(b"ab").to_bytes(4, "little") + b"ab" + len(b"xyz").to_bytes(4, "little") + b"xyz"
    body, n = binary(
        {"inputs": [{"name": "x", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(b)}}]}, b
    )
    s = {
        "inputs": [{"name": "x", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "y", "datatype": "BYTES", "shape": [-1]}],
    }
    req = parse_infer(body, n, s)
    assert req.inputs[0].tolist() == [b"ab", b"xyz"]
    req.outputs = [(0, True)]
    out, hlen = encode_response("m", "1", req, [req.inputs[0]], s["outputs"])
    assert out[hlen:] == b


def test_bool_and_int_json_checks():
    ok = parse_infer(
        orjson.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "BOOL", "data": [True, False, True]}]}),
        None,
        sig("BOOL"),
    )
    assert ok.inputs[0].dtype == np.bool_
    for datatype, data, msg in (
        ("BOOL", [1, 0, 1], "true or false"),
        ("INT8", [1, 2, 300], "out of range"),
        ("INT32", [1.5, 2, 3], "integers"),
    ):
        with pytest.raises(ProtocolError, match=msg):
            parse_infer(
                orjson.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": datatype, "data": data}]}),
                None,
                sig(datatype),
            )


def test_decompress_limits():
    assert decompress(gzip.compress(b"abc"), "gzip", 10) == b"abc"
    with pytest.raises(ProtocolError) as e:
        decompress(gzip.compress(b"a" * 100), "gzip", 10)
    assert e.value.status == 413
    with pytest.raises(ProtocolError, match="truncated"):
        decompress(gzip.compress(b"abc")[:-6], "gzip", 10)
    with pytest.raises(ProtocolError, match="cannot decompress"):
        decompress(b"not gzip", "gzip", 10)


def test_buckets():
    assert buckets_for(32) == [2, 4, 8, 16, 32]
    assert buckets_for(48) == [2, 4, 8, 16, 32, 48]
    assert buckets_for(1) == [2]


def test_batcher_pads_to_buckets_and_hands_back_exact_rows():
    seen = []

    def forward(x):
        seen.append(x.shape[0])
        return [x * 2, x.sum(axis=1)]

    b = Batcher(forward, [((3,), np.dtype(np.float32))], max_batch_size=8)
    b.warm_up()
    assert seen[:3] == [2, 4, 8] and not b.offload  # a fast forward runs inline on the event loop
    seen.clear()

    async def main():
        xs = [np.full((n, 3), i, np.float32) for i, n in enumerate([1, 2, 3, 1, 20])]
        futs = [b.submit([x], len(x)) for x in xs]  # all queued in one loop turn
        return xs, await asyncio.gather(*futs)

    xs, outs = asyncio.run(main())
    for x, (doubled, summed) in zip(xs, outs):
        np.testing.assert_array_equal(doubled, x * 2)
        np.testing.assert_array_equal(summed, x.sum(axis=1))
    # 1+2+3+1 = 7 rows in one batch padded to 8; the 20-row request alone in chunks of 8, 8, 4
    assert seen == [8, 8, 8, 4]


def test_batcher_failure_reaches_every_request():
    def forward(x):
        raise RuntimeError("boom")

    b = Batcher(forward, [((3,), np.dtype(np.float32))], max_batch_size=4)

    async def main():
        futs = [b.submit([np.zeros((1, 3), np.float32)], 1) for _ in range(3)]
        return await asyncio.gather(*futs, return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(main()))


def test_slow_forward_runs_in_a_thread_while_the_next_batch_gathers():
    import threading
    import time

    seen, threads = [], set()

    def forward(x):
        time.sleep(0.01)
        seen.append(x.shape[0])
        threads.add(threading.current_thread().name)
        return [x + 1]

    b = Batcher(forward, [((2,), np.dtype(np.float32))], max_batch_size=16, offload_after=0.002)
    b.warm_up()
    assert b.offload
    seen.clear()
    threads.clear()

    async def client(i):
        await asyncio.sleep(0.001 * (i % 5))
        x = np.full((1, 2), i, np.float32)
        (y,) = await b.submit([x], 1)
        np.testing.assert_array_equal(y, x + 1)

    async def main():
        await asyncio.gather(*(client(i) for i in range(40)))

    asyncio.run(main())
    assert sum(seen) >= 40 and len(seen) < 40  # requests that arrived during a forward pass were batched
    assert all(name.startswith("aios-batch") for name in threads)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # the server's filter; pytest resets filters
@pytest.mark.parametrize(
    "datatype, value",
    [("FP32", 1e300), ("FP32", -3.5e38), ("FP16", 70000.0), ("FP16", 65520), ("BF16", 1e39)],
)
def test_json_floats_that_overflow_are_refused_like_integers(datatype, value):
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": datatype, "data": [1.0, value, 2.0]}]})
    with pytest.raises(ProtocolError, match=f"out of range for {datatype}") as e:
        parse_infer(body, None, sig(datatype))
    assert e.value.status == 400


def test_largest_finite_floats_still_pass():
    for datatype, value in (("FP32", 3.4028235e38), ("FP16", 65504.0), ("BF16", 3.3895314e38), ("FP64", 1e300)):
        body = orjson.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": datatype, "data": [value]}]})
        req = parse_infer(body, None, sig(datatype, shape=(-1, 1)))
        assert np.isfinite(req.inputs[0].astype(np.float64)).all(), datatype


def test_row_limit_is_checked_before_the_data():
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [5, 3], "datatype": "FP32", "data": [0.0]}]})
    with pytest.raises(ProtocolError, match="at most 4 per request") as e:
        parse_infer(body, None, sig(), max_rows=4)
    assert e.value.status == 413
    with pytest.raises(ProtocolError, match="at most 4"):
        parse_infer(np.zeros((5, 3), np.float32).tobytes(), "0", sig(), max_rows=4)
    assert parse_infer(np.zeros((4, 3), np.float32).tobytes(), "0", sig(), max_rows=4).rows == 4


def test_batcher_refuses_past_its_queue_limit():
    from aios_lab.serve.errors import Overloaded

    b = Batcher(lambda x: [x], [((3,), np.dtype(np.float32))], max_batch_size=4, max_queue_rows=6)

    async def main():
        x = np.zeros((4, 3), np.float32)
        first = b.submit([x], 4)  # nothing waits: always admitted
        with pytest.raises(Overloaded, match="queue is full") as e:
            b.submit([x], 4)  # 4 waiting + 4 > 6
        second = b.submit([x[:2]], 2)  # 4 + 2 fits
        assert b.pending_rows() == 6
        await asyncio.gather(first, second)
        assert b.pending_rows() == 0
        return e.value

    exc = asyncio.run(main())
    assert exc.status == 429 and dict(exc.headers)[b"retry-after"] == b"1"


def test_a_request_over_the_largest_bucket_runs_off_the_event_loop():
    import threading

    names = []

    def forward(x):
        names.append(threading.current_thread().name)
        return [x + 1]

    for enabled in (True, False):
        b = Batcher(forward, [((2,), np.dtype(np.float32))], max_batch_size=4, enabled=enabled)
        names.clear()

        async def main(b=b):
            (y,) = await b.submit([np.zeros((10, 2), np.float32)], 10)
            return y

        np.testing.assert_array_equal(asyncio.run(main()), np.ones((10, 2), np.float32))
        assert len(names) == 3 and all(n.startswith("aios-batch") for n in names), (enabled, names)


def test_settings_are_the_one_source_of_defaults_and_flags():
    from aios_lab.errors import InvalidInput
    from aios_lab.serve import ServeSettings
    from aios_lab.serve.process import parser

    s = ServeSettings(port=8601, models=["a", "b@2"], batching=False, max_rows=10, body_timeout_s=2.5)
    assert ServeSettings.from_args(parser().parse_args(s.to_argv())) == s
    assert ServeSettings.from_args(parser().parse_args([])) == ServeSettings()
    assert s.url == "http://127.0.0.1:8601" and s.max_body_bytes == 64 << 20
    for bad in ({"port": 0}, {"max_rows": 0}, {"max_batch_size": 2.5}, {"body_timeout_s": "soon"}, {"models": "a"}):
        with pytest.raises(InvalidInput):
            ServeSettings(**bad)
    with pytest.raises(InvalidInput, match="unknown serve option"):
        ServeSettings().with_options(max_batch=3)
