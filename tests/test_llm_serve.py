"""Language models on the serving endpoint: a real ``python -m aios_lab.serve`` process on 127.0.0.1 serving registry
versions imported from the tiny Hugging Face fixtures, called with the official ``openai`` client, plain HTTP
(the generate extension) and tritonclient (the V2 routes of the same process).

The tests share one server and run in file order: the hot swap near the end moves ``chat`` to v2.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import orjson
import pytest
from test_serve_support import aios_home, move_alias, publish_tiny, running_server

pytestmark = pytest.mark.timeout(240)

FIXTURES = Path(__file__).parent / "fixtures" / "hf"
CONTEXT = 128  # the fixtures' max_position_embeddings
MAX_WAITING = 16
PROMPTS = [f"Story {i}: once upon a time there was" for i in range(16)]
HELLO = [{"role": "user", "content": "Hello, who are you?"}]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    home = tmp_path_factory.mktemp("llm-serve")
    with aios_home(home):
        from aios_lab import registry

        registry.import_model("chat", str(FIXTURES / "llama"), alias="production")
        publish_tiny("tiny", seed=0)
    settings = dict(lm_slots=16, lm_max_waiting=MAX_WAITING, max_body_mb=1.0, status_interval_s=0.5)
    # max_batch_size=4: the mlp's batcher compiles 2 buckets instead of 5 (its batching is not tested here)
    with running_server(home, **settings, poll_interval_s=0.5, max_batch_size=4) as s:
        yield s


@pytest.fixture
def home(srv, monkeypatch):
    monkeypatch.setenv("AIOS_HOME", str(srv.home))
    return srv.home


@pytest.fixture
def client(srv):
    with openai.OpenAI(base_url=srv.url + "/v1", api_key=srv.infer, max_retries=0, timeout=60) as c:
        yield c


def http(srv) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers=srv.headers(), timeout=60)


def metric(srv, name: str, **labels: str) -> float:
    """One sample of ``name`` from /metrics (0 when it is not there yet)."""
    with http(srv) as c:
        text = c.get("/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            head, value = line.rsplit(" ", 1)
            got = ",".join(sorted(head[len(name) + 1 : -1].split(",")))
            if got == want:
                return float(value)
    return 0.0


def wait_for(predicate, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@functools.cache
def local_lm():
    """The same registry version, loaded in the test process (lm.generate is the reference)."""
    from aios_lab import registry

    return registry.load("chat", 1, audit=False)


def ascii_window(text: str, start: int = 4, width: int = 3) -> str:
    """A stop string taken from ``text``: its first run of ``width`` ASCII letters at or after ``start``."""
    for i in range(start, len(text) - width):
        if text[i : i + width].isascii() and text[i : i + width].isalpha():
            return text[i : i + width]
    raise AssertionError(f"no ASCII window in {text!r}")


def chat_text(client, messages=HELLO, **kw) -> tuple[str, str]:
    r = client.chat.completions.create(model="chat", messages=messages, **kw)
    return r.choices[0].message.content, r.choices[0].finish_reason


def stream_chat(client, messages=HELLO, **kw) -> tuple[str, list]:
    chunks = list(client.chat.completions.create(model="chat", messages=messages, stream=True, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


# -- the OpenAI API -------------------------------------------------------------------------------------
def test_models_and_chat_through_the_template(srv, home, client):
    ids = [m.id for m in client.models.list().data]
    assert "chat" in ids and "chat:1" in ids and "tiny" not in ids  # the V2 mlp is not a language model
    assert client.models.retrieve("chat").max_model_len == CONTEXT

    r = client.chat.completions.create(model="chat", messages=HELLO, max_tokens=24, temperature=0)
    ref = local_lm().generate(HELLO, max_tokens=24, temperature=0.0)  # renders the chat template itself
    assert r.choices[0].message.content == ref.text and r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == ref.finish_reason
    assert r.model == "chat:1" and r.object == "chat.completion"
    assert r.usage.prompt_tokens == ref.prompt_tokens and r.usage.completion_tokens == len(ref.tokens)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    text, chunks = stream_chat(client, max_tokens=24, temperature=0)
    assert text == ref.text
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].object == "chat.completion.chunk"
    assert chunks[-1].choices[0].finish_reason == ref.finish_reason and chunks[-1].usage is None


def test_completions_streaming_and_not_with_usage(srv, home, client):
    tok = local_lm().tokenizer
    ref = local_lm().generate(PROMPTS[0], max_tokens=20, temperature=0.0)
    r = client.completions.create(model="chat", prompt=PROMPTS[0], max_tokens=20, temperature=0)
    assert r.choices[0].text == ref.text and r.choices[0].finish_reason == ref.finish_reason
    assert r.usage.prompt_tokens == len(tok.encode(PROMPTS[0])) and r.usage.completion_tokens == len(ref.tokens)

    chunks = list(
        client.completions.create(
            model="chat",
            prompt=PROMPTS[0],
            max_tokens=20,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ref.text
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == r.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1])

    # several prompts at once, as token ids: choices come back per prompt
    ids = [tok.encode(PROMPTS[0]), tok.encode(PROMPTS[1])]
    r = client.completions.create(model="chat", prompt=ids, max_tokens=20, temperature=0)
    assert [c.index for c in r.choices] == [0, 1] and r.choices[0].text == ref.text
    assert r.usage.prompt_tokens == len(ids[0]) + len(ids[1])


def test_stop_sequences(srv, home, client):
    full, _ = chat_text(client, max_tokens=40, temperature=0)
    stop = ascii_window(full)
    cut = full[: full.index(stop)]
    text, finish = chat_text(client, max_tokens=40, temperature=0, stop=[stop, "never-appears"])
    assert (text, finish) == (cut, "stop")
    text, chunks = stream_chat(client, max_tokens=40, temperature=0, stop=stop)
    assert text == cut and chunks[-1].choices[0].finish_reason == "stop"
    r = client.completions.create(model="chat", prompt=PROMPTS[2], max_tokens=30, temperature=0)
    whole = r.choices[0].text
    stop = ascii_window(whole, 2, 2)
    r = client.completions.create(model="chat", prompt=PROMPTS[2], max_tokens=30, temperature=0, stop=stop)
    assert r.choices[0].text == whole[: whole.index(stop)] and r.choices[0].finish_reason == "stop"


def test_seed_determinism_alone_and_batched(srv, home, client):
    kw = dict(max_tokens=24, temperature=1.0, top_p=0.9, seed=42)
    a, _ = chat_text(client, **kw)
    b, _ = chat_text(client, **kw)
    other, _ = chat_text(client, **{**kw, "seed": 43})
    assert a == b and a != other
    r = client.chat.completions.create(model="chat", messages=HELLO, n=2, **kw)
    assert r.choices[0].message.content == a and r.choices[1].message.content not in (a, "")
    results: dict[int, str] = {}

    def run(i):  # the same seeded request among 15 others that sample with their own seeds
        if i == 0:
            results[i] = chat_text(client, **kw)[0]
        else:
            results[i] = chat_text(client, messages=[{"role": "user", "content": PROMPTS[i]}], **{**kw, "seed": i})[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results[0] == a


def test_sixteen_concurrent_streams_match_sequential_greedy(srv, home, client):
    sequential = [
        client.completions.create(model="chat", prompt=p, max_tokens=48, temperature=0).choices[0].text for p in PROMPTS
    ]
    texts: dict[int, str] = {}
    errors: list[str] = []
    start = threading.Barrier(16)

    def run(i):
        try:
            with openai.OpenAI(base_url=srv.url + "/v1", api_key=srv.infer, max_retries=0, timeout=60) as c:
                start.wait()
                s = c.completions.create(model="chat", prompt=PROMPTS[i], max_tokens=48, temperature=0, stream=True)
                texts[i] = "".join(ch.choices[0].text for ch in s)
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    assert [texts[i] for i in range(16)] == sequential


# -- slots, disconnects, back-pressure ------------------------------------------------------------------
def test_client_disconnecting_mid_stream_frees_its_slot(srv, home, client):
    body = {"model": "chat", "prompt": "Tell me a story", "max_tokens": 100, "temperature": 0}
    assert client.completions.create(**body).choices[0].finish_reason == "length"  # it would run 100 tokens
    labels = dict(model_name="chat", version="1")
    aborts = lambda: metric(srv, "aios_llm:request_success_total", **labels, finished_reason="abort")
    before = aborts()
    for _ in range(5):  # the client must close before the 100 tokens are out: on a busy machine, try again
        with http(srv) as c, c.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
            assert r.status_code == 200
            next(r.iter_raw())  # the first tokens are out: the sequence holds a slot
        # the connection is closed here
        assert wait_for(lambda: metric(srv, "aios_llm:kv_slots_used", **labels) == 0)
        if aborts() > before:
            break
    assert aborts() > before, "the engine never cut a stream short when its client went away"


def test_client_that_disconnects_at_once_leaks_no_slot(srv, home):
    host, port = srv.hostport.rsplit(":", 1)
    body = orjson.dumps({"model": "chat", "prompt": "Hi", "max_tokens": 100, "stream": True})
    for _ in range(5):
        with socket.create_connection((host, int(port))) as s:
            s.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {srv.infer}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
    assert wait_for(lambda: metric(srv, "aios_llm:kv_slots_used", model_name="chat", version="1") == 0)
    assert metric(srv, "aios_llm:num_requests_waiting", model_name="chat", version="1") == 0
    with http(srv) as c:
        assert c.get("/v2/health/ready").status_code == 200


def test_all_slots_busy_and_queue_full_is_429_with_retry_after(srv, home):
    body = {"model": "chat", "prompt": "Go", "max_tokens": 110, "temperature": 1.0, "n": 16, "stream": True}
    refused = None
    for _ in range(8):  # the first request must still be generating when the third arrives
        with http(srv) as c1, http(srv) as c2, http(srv) as c3:
            with c1.stream("POST", "/v1/completions", json=body) as first:
                rest = first.iter_raw()
                next(rest)  # 16 sequences hold all 16 slots
                with c2.stream("POST", "/v1/completions", json=body) as second:  # 16 more fill the queue
                    r = c3.post("/v1/completions", json={"model": "chat", "prompt": "One more", "max_tokens": 4})
                    if r.status_code == 429:
                        refused = r
                    second.read()
                for _ in rest:
                    pass
        if refused is not None:
            break
    assert refused is not None, "never saw 429 with every slot busy and the queue full"
    assert refused.headers["retry-after"] == "1"
    err = refused.json()["error"]
    assert err["type"] == "rate_limit_error" and "16 slots" in err["message"]
    with http(srv) as c:
        assert c.post("/v1/completions", json={"model": "chat", "prompt": "After", "max_tokens": 4}).status_code == 200


# -- bad input ------------------------------------------------------------------------------------------
BAD = [
    ({"messages": HELLO}, 400, "model"),
    ({"model": "nosuch", "messages": HELLO}, 404, "model"),
    ({"model": "tiny", "messages": HELLO}, 400, "model"),
    ({"model": "chat", "messages": []}, 400, "messages"),
    ({"model": "chat", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages"),
    ({"model": "chat", "messages": HELLO, "max_tokens": -1}, 400, "max_tokens"),
    ({"model": "chat", "messages": HELLO, "max_completion_tokens": 0}, 400, "max_completion_tokens"),
    ({"model": "chat", "messages": HELLO, "temperature": 2.5}, 400, "temperature"),
    ({"model": "chat", "messages": HELLO, "top_p": 0}, 400, "top_p"),
    ({"model": "chat", "messages": HELLO, "top_p": 1.5}, 400, "top_p"),
    ({"model": "chat", "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"model": "chat", "messages": HELLO, "n": 0}, 400, "n"),
    ({"model": "chat", "messages": HELLO, "max_tokens": 200}, 400, "max_tokens"),
    ({"model": "chat", "messages": HELLO, "logprobs": True}, 400, "logprobs"),
]


def test_bad_input_gets_openai_errors_and_the_server_stays_healthy(srv, home, client):
    with http(srv) as c:
        for body, status, param in BAD:
            r = c.post("/v1/chat/completions", json=body)
            assert r.status_code == status, (body, r.text)
            err = r.json()["error"]
            assert set(err) == {"message", "type", "param", "code"} and err["param"] == param, (body, err)
            assert "\n" not in err["message"]
        r = c.post("/v1/chat/completions", json={"model": "chat", "messages": HELLO, "max_tokens": 200})
        assert f"context of {CONTEXT} tokens" in r.json()["error"]["message"]
        r = c.post("/v1/completions", content=b"{not json")
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = c.post("/v1/completions", content=b"x" * (1024 * 1024 + 10))
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        r = c.post("/v2/models/chat/infer", json={"inputs": []})
        assert r.status_code == 400 and "generate" in r.json()["error"]
        assert c.get("/v1/chat/completions").status_code == 405
        r = httpx.post(srv.url + "/v1/chat/completions", json={"model": "chat", "messages": HELLO})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    from aios_lab.serve import create_token

    scoped = {"Authorization": "Bearer " + create_token("infer", models=["tiny"])}
    with httpx.Client(base_url=srv.url, headers=scoped, timeout=60) as c:
        r = c.post("/v1/chat/completions", json={"model": "chat", "messages": HELLO, "max_tokens": 2})
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
        assert c.get("/v1/models").json()["data"] == [] and c.get("/v1/models/chat").status_code == 403
        assert c.post("/v2/models/chat/generate", json={"text_input": "Hi"}).status_code == 403
    with http(srv) as c:
        assert c.get("/v2/health/ready").status_code == 200
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nosuch", messages=HELLO)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="chat", messages=HELLO, temperature=5)
    assert chat_text(client, max_tokens=4, temperature=0)[1] in ("stop", "length")
    assert metric(srv, "aios_llm:kv_slots_used", model_name="chat", version="1") == 0


# -- the generate extension and the V2 routes of the same process ---------------------------------------
def test_generate_extension_over_plain_http(srv, home, client):
    ref = client.completions.create(model="chat", prompt=PROMPTS[3], max_tokens=12, temperature=0).choices[0].text
    body = {"text_input": PROMPTS[3], "parameters": {"max_tokens": 12, "temperature": 0}}
    with http(srv) as c:
        r = c.post("/v2/models/chat/generate", json=body)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.json() == {"model_name": "chat", "model_version": "1", "text_output": ref, "finish_reason": "length"}
        assert c.post("/v2/models/chat/versions/1/generate", json=body).json()["text_output"] == ref
        with c.stream("POST", "/v2/models/chat/generate_stream", json=body) as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            events = [orjson.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: ")]
        assert "".join(e["text_output"] for e in events) == ref
        assert events[-1]["finish_reason"] == "length" and all(e["model_version"] == "1" for e in events)
        r = c.post("/v2/models/chat/generate", json={"parameters": {}})
        assert r.status_code == 400 and "text_input" in r.json()["error"]
        r = c.post("/v2/models/tiny/generate", json=body)
        assert r.status_code == 400 and "not a language model" in r.json()["error"]
        assert "generate" in c.get("/v2").json()["extensions"]


def test_tritonclient_on_the_v2_routes_of_the_same_process(srv, home):
    import tritonclient.http as triton

    tc = triton.InferenceServerClient(srv.hostport)
    h = srv.headers()
    assert tc.is_model_ready("tiny", headers=h) and tc.is_model_ready("chat", headers=h)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    out = tc.infer("tiny", [inp], headers=dict(h)).as_numpy("logits")
    from aios_lab import registry

    assert np.allclose(out, registry.load("tiny", audit=False).predict(x), atol=1e-6)
    meta = tc.get_model_metadata("chat", headers=h)
    assert meta["inputs"][0]["name"] == "text_input" and meta["outputs"][0]["datatype"] == "BYTES"
    assert tc.get_model_config("chat", headers=h)["parameters"]["max_model_len"]["string_value"] == str(CONTEXT)


def test_status_row_shows_tokens_per_second_and_ttft(srv, home, client):
    from aios_lab.serve import endpoints

    chat_text(client, max_tokens=16, temperature=0)

    def llm_status():
        ep = next(e for e in endpoints() if e.url == srv.url)
        m = ((ep.status or {}).get("models") or {}).get("chat") or {}
        return m.get("llm"), (ep.status or {}).get("llm")

    def published() -> bool:  # a status written after that request, and after an earlier one (a rate)
        per = llm_status()[0] or {}
        return per.get("ttft_p50_ms") is not None and per.get("tokens_per_s") is not None and not per["running"]

    assert wait_for(published, 10)
    per, overall = llm_status()
    assert per["ttft_p50_ms"] > 0 and per["kv_slots"] == 16 and per["running"] == 0 and per["waiting"] == 0
    assert per["generation_tokens"] > 0 and "/v1/chat/completions" in per["routes"]
    assert per["tokens_per_s"] is not None and overall["models"] == ["chat"]


def test_chat_magic_talks_to_the_served_model(srv, home, client, ip, monkeypatch):
    from aios_lab.errors import NotFound
    from aios_lab.serve.llm.client import EndpointLM

    want, _ = chat_text(client, max_tokens=8, temperature=0)
    monkeypatch.setenv("AIOS_TOKEN", srv.infer)
    box = ip.run_line_magic("aios", f"chat chat --endpoint {srv.url} --max-tokens 8")
    box.submit(HELLO[0]["content"])
    box.wait(60)
    assert box.conversation.transcript() == [("user", HELLO[0]["content"]), ("assistant", want)]
    monkeypatch.delenv("AIOS_TOKEN")  # no URL: the running local endpoint, with this AIOS_HOME's admin token
    box = ip.run_line_magic("aios", "chat chat --endpoint --max-tokens 8 --system Hi")
    assert srv.url in box.conversation.lm.ref
    pieces = []
    reply = box.conversation.send(HELLO[0]["content"], on_text=pieces.append)
    assert reply and pieces[-1] == reply
    with pytest.raises(NotFound, match="404.*not served here"):
        EndpointLM.connect("nosuch", srv.url, srv.infer).generate(HELLO)


# -- hot swap -------------------------------------------------------------------------------------------
def test_hot_swap_during_streaming_fails_no_request(srv, home):
    from aios_lab import registry

    stop = threading.Event()
    done: list[tuple[str, str, bool, float, float]] = []  # (model that answered, finish, saw [DONE], sent, ended)
    errors: list[str] = []

    def worker(i):
        body = {"model": "chat", "prompt": PROMPTS[i], "max_tokens": 60, "temperature": 0, "stream": True}
        with http(srv) as c:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    with c.stream("POST", "/v1/completions", json=body) as r:
                        if r.status_code != 200:
                            errors.append(f"{r.status_code} {r.read()!r}")
                            continue
                        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                chunks = [orjson.loads(line[6:]) for line in lines if line != "data: [DONE]"]
                if any("error" in ch for ch in chunks):
                    errors.append(str(chunks))
                    continue
                models = {ch["model"] for ch in chunks}
                finish = [ch["choices"][0]["finish_reason"] for ch in chunks if ch["choices"][0]["finish_reason"]]
                if len(models) != 1 or len(finish) != 1:
                    errors.append(f"mixed stream: {models} {finish}")
                    continue
                done.append((models.pop(), finish[0], lines[-1] == "data: [DONE]", sent, time.monotonic()))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(6)]
    for t in threads:
        t.start()
    assert wait_for(lambda: len(done) >= 6, 60)
    registry.import_model("chat", str(FIXTURES / "qwen2"))  # v2
    move_alias("chat", "production", 2)
    assert wait_for(lambda: any(d[0] == "chat:2" for d in done[-6:]), 90)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    answered = [d[0] for d in done]
    assert "chat:1" in answered and "chat:2" in answered
    assert all(d[2] for d in done)
    # once v2 has answered a request, the swap has happened: every request sent after that goes to v2
    swapped = min(d[4] for d in done if d[0] == "chat:2")
    late = [d[0] for d in done if d[3] > swapped]
    assert late and all(m == "chat:2" for m in late), f"new requests went to the old version: {late}"
    # the old version finished its streams, then let go of its slots and its gauges
    assert wait_for(lambda: metric(srv, "aios_llm:kv_slots_total", model_name="chat", version="1") == 0, 30)
    with http(srv) as c:
        ids = [m["id"] for m in c.get("/v1/models").json()["data"]]
        assert "chat:2" in ids and "chat:1" not in ids
