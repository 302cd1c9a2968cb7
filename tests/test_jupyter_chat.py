"""The sidebar's Chat panel route, ``POST /aios/api/chat``: a real Jupyter server proxying a real endpoint that
serves the tiny Llama fixture.

Covers: the text streamed through the extension equals a direct greedy call to the endpoint; the extension uses
one infer token scoped to the model (minted once, never the admin token, never sent to the browser); a browser
that goes away mid-stream frees the endpoint's KV slot; bad bodies are 400 with nothing minted; an endpoint on
plain HTTP off loopback is refused before any connection; an unknown model is 404; no token or XSRF is 403.
"""

from __future__ import annotations

import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from _jupyter_server import Server, insert_endpoint, llm_status, start, wait_for

import aios_lab as aios

pytestmark = pytest.mark.timeout(180)

FIXTURE = Path(__file__).parent / "fixtures" / "hf" / "llama"
HELLO = [{"role": "user", "content": "Hello, who are you?"}]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A Jupyter server and an endpoint serving ``chat``, both on the same AIOS_HOME."""
    from aios_lab import registry
    from aios_lab.procs import free_port

    tmp = tmp_path_factory.mktemp("chat")
    home = tmp / "aios"
    with pytest.MonkeyPatch.context() as mp, ThreadPoolExecutor(1) as pool:
        mp.setenv("AIOS_HOME", str(home))
        jupyter = pool.submit(start, tmp, home)  # starts while the endpoint loads the model
        ep = None
        try:
            registry.import_model("chat", str(FIXTURE))
            ep = aios.serve(port=free_port(), models=["chat"], lm_slots=2, lm_max_len=64, status_interval_s=0.5)
            yield jupyter.result(), ep
        finally:
            if ep is not None:
                ep.stop()
            if jupyter.exception() is None:
                jupyter.result().stop()


@pytest.fixture
def server(setup, monkeypatch) -> Server:
    srv, ep = setup
    monkeypatch.setenv("AIOS_HOME", str(srv.home))
    wait_for(lambda: _serves_chat(ep.url), what="the endpoint to publish that it serves chat")
    return srv


@pytest.fixture
def endpoint(setup):
    return setup[1]


def _serves_chat(url: str) -> bool:
    from aios_lab.serve import endpoints

    return any(e.url == url and "llm" in ((e.status or {}).get("models", {}).get("chat") or {}) for e in endpoints())


def chat(server: Server, body: dict, **kw) -> requests.Response:
    return requests.post(server.api("chat"), json=body, headers=server.auth, timeout=120, **kw)


def events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]


def reply(docs: list[dict]) -> str:
    return "".join((c.get("delta") or {}).get("content") or "" for d in docs for c in d.get("choices") or ())


def chat_tokens() -> list:
    """The tokens the extension minted (compare their ids: ``last_used`` moves)."""
    from aios_lab.serve.auth import tokens

    return [t for t in tokens() if t.label == "jupyter chat"]


def minted() -> list[str]:
    return [t.id for t in chat_tokens()]


def metric(url: str, name: str, **labels: str) -> float:
    from aios_lab.serve.auth import default_token

    text = requests.get(url + "/metrics", headers={"Authorization": f"Bearer {default_token()}"}, timeout=10).text
    want = sorted(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{"):
            head, value = line.rsplit(" ", 1)
            if sorted(head[len(name) + 1 : -1].split(",")) == want:
                return float(value)
    return 0.0


def test_streams_what_the_endpoint_says_with_a_scoped_infer_token(server, endpoint):
    from aios_lab.serve.auth import default_token

    body = {"model": "chat", "messages": HELLO, "max_tokens": 12, "temperature": 0}
    with chat(server, body, stream=True) as r:
        assert r.status_code == 200, r.text
        pieces = list(r.iter_content(chunk_size=None))  # one per HTTP chunk the extension flushed
    assert r.headers["Content-Type"].startswith("text/event-stream") and r.headers["X-Aios-Endpoint"] == endpoint.url
    assert len(pieces) > 2, pieces  # relayed as it came, not gathered first
    text = b"".join(pieces).decode()
    docs = events(text)
    assert text.rstrip().endswith("data: [DONE]") and docs[-1]["usage"]["completion_tokens"] == 12
    direct = requests.post(
        endpoint.url + "/v1/chat/completions",
        json={**body, "stream": False},
        headers={"Authorization": f"Bearer {default_token()}"},
        timeout=120,
    )
    assert direct.status_code == 200, direct.text
    assert reply(docs) == direct.json()["choices"][0]["message"]["content"] != ""
    assert not re.search(r"aios_[A-Za-z0-9_-]{43}", text + str(r.headers))  # no credential goes to the browser

    again = chat(server, {"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    assert again.status_code == 200 and reply(events(again.text)), again.text
    long = [*HELLO, {"role": "assistant", "content": reply(docs)}, {"role": "user", "content": "And then? " * 8}]
    r = chat(server, {**body, "messages": long})  # the endpoint's 400, its one line kept
    assert r.status_code == 400 and r.json()["error"] == "EndpointError", r.text
    assert "context" in r.json()["message"] and "\n" not in r.json()["message"]
    (token,) = chat_tokens()  # minted once, kept in the extension's memory
    assert token.role == "infer" and token.models == ("chat",) and token.state == "active"
    assert token.expires is not None and token.expires - time.time() < 13 * 3600
    assert "Traceback" not in server.log_text()


def test_a_revoked_chat_token_is_replaced(server):
    from aios_lab.serve.auth import revoke_token

    body = {"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    assert chat(server, body).status_code == 200
    (old,) = [t for t in chat_tokens() if t.state == "active"]
    revoke_token(old.id)
    time.sleep(2.2)  # the endpoint looks a token up again at most 2 s apart
    r = chat(server, body)
    assert r.status_code == 200 and reply(events(r.text)), r.text
    (new,) = [t for t in chat_tokens() if t.state == "active"]
    assert new.id != old.id and new.models == ("chat",) and new.role == "infer"


def test_a_browser_that_goes_away_frees_the_slot(server, endpoint):
    labels = dict(model_name="chat", version="1")
    aborts = lambda: metric(endpoint.url, "aios_llm:request_success_total", **labels, finished_reason="abort")
    before = aborts()
    body = {"model": "chat", "messages": [{"role": "user", "content": "Tell"}], "temperature": 0}
    for _ in range(5):  # the browser must leave before the reply is out: on a busy machine, try again
        with requests.post(server.api("chat"), json=body, headers=server.auth, stream=True, timeout=60) as r:
            assert r.status_code == 200, r.text
            next(r.iter_content(chunk_size=None))  # the first event is out: the sequence holds a slot
        # the connection is closed here
        wait_for(lambda: metric(endpoint.url, "aios_llm:kv_slots_used", **labels) == 0, what="the slot to be freed")
        if aborts() > before:
            break
    assert aborts() > before, "the extension never closed the upstream stream when the browser went away"
    assert "Traceback" not in server.log_text()


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        [],
        {"messages": HELLO},
        {"model": "Bad Name", "messages": HELLO},
        {"model": "chat", "messages": []},
        {"model": "chat", "messages": "hello"},
        {"model": "chat", "messages": [{"role": "user"}]},
        {"model": "chat", "messages": [{"role": "tool", "content": "x"}]},
        {"model": "chat", "messages": [{"role": "user", "content": 3}]},
        {"model": "chat", "messages": HELLO, "temperature": 9},
        {"model": "chat", "messages": HELLO, "max_tokens": 0},
        {"model": "chat", "messages": HELLO, "max_tokens": 2.5},
        {"model": "chat", "messages": HELLO, "top_p": 0},
        {"model": "chat", "messages": HELLO, "seed": -1},
        {"model": "chat", "messages": HELLO, "stream": False},
        {"model": "chat", "messages": HELLO, "endpoint": 7},
    ],
)
def test_bad_bodies_are_400_and_mint_nothing(server, body):
    before = minted()
    data = body if isinstance(body, str) else json.dumps(body)
    r = requests.post(server.api("chat"), data=data, headers=server.auth, timeout=30)
    assert r.status_code == 400, r.text
    doc = r.json()
    assert doc["error"] == "InvalidInput" and "\n" not in doc["message"] and doc["message"]
    assert minted() == before


def _own_address() -> str | None:
    """This machine's address on its default route (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_plain_http_off_loopback_is_refused_before_any_connection(server):
    from aios_lab.catalog import catalog

    ip = _own_address() or "10.1.2.3"
    listener = socket.create_server((ip, 0)) if ip != "10.1.2.3" else None
    port = listener.getsockname()[1] if listener else 8500
    url = f"http://{ip}:{port}"
    insert_endpoint(url, ip, port, llm_status(time.time()))  # it says it serves chat
    before = minted()
    try:
        for named in ({"endpoint": url}, {}):  # named, and as the newest endpoint serving chat
            t0 = time.monotonic()
            r = chat(server, {"model": "chat", "messages": HELLO, **named})
            assert r.status_code == 403 and r.json()["error"] == "Forbidden", r.text
            assert "plain HTTP" in r.json()["message"] and time.monotonic() - t0 < 5
        if listener is not None:
            listener.settimeout(0.5)
            with pytest.raises(TimeoutError):
                listener.accept()  # nobody knocked
    finally:
        if listener is not None:
            listener.close()
        with catalog().tx() as db:
            db.execute("DELETE FROM endpoints WHERE url = ?", (url,))
    assert minted() == before


def test_unknown_models_and_endpoints(server):
    r = chat(server, {"model": "nobody", "messages": HELLO})
    assert r.status_code == 404 and r.json()["error"] == "NotFound" and "nobody" in r.json()["message"]
    r = chat(server, {"model": "chat", "messages": HELLO, "endpoint": "http://127.0.0.1:1"})
    assert r.status_code == 404 and "%aios endpoints" in r.json()["message"]
    r = chat(server, {"model": "chat:99", "messages": HELLO})  # the endpoint's own 404, its status kept
    assert r.status_code == 404 and r.json()["error"] == "EndpointError", r.text


def test_needs_a_token_and_xsrf(server):
    body = {"model": "chat", "messages": HELLO}
    assert requests.post(server.api("chat"), json=body, timeout=30).status_code == 403
    session = requests.Session()
    assert session.get(server.url + f"api/status?token={server.token}", timeout=30).status_code == 200
    session.cookies.set("_xsrf", "xsrf-of-this-test", domain="127.0.0.1", path="/")
    before = minted()
    r = session.post(server.api("chat"), json=body, timeout=30)
    assert r.status_code == 403 and "xsrf" in r.text.lower()
    r = session.post(server.api("chat"), json={"model": "nobody", "messages": HELLO},
                     headers={"X-XSRFToken": "xsrf-of-this-test"}, timeout=30)  # fmt: skip
    assert r.status_code == 404  # past authentication and XSRF
    assert minted() == before
