"""Schemathesis fuzzes the server's own OpenAPI document: no 5xx, every status and body as declared.

It drives the ASGI app in-process (the same app the server process runs), with a real registry model.
"""

from __future__ import annotations

import asyncio
import os
import tempfile

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance
from test_serve_support import aios_home, publish_tiny

_HOME = tempfile.mkdtemp(prefix="aios-serve-fuzz-")


def _app():
    from aios_lab.serve import build_app, create_token, default_token

    with aios_home(_HOME):
        publish_tiny("tiny", seed=0)
        app = build_app(poll_interval_s=0, max_body_mb=1.0)
        asyncio.run(app.startup())  # loads and warms the models; no background tasks with poll_interval=0
        return app, default_token(), create_token("infer")


APP, ADMIN, INFER = _app()


async def served(scope, receive, send):
    """The started app; the test client's per-call lifespan events are answered here (the app started once)."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    await APP(scope, receive, send)


with aios_home(_HOME):
    schema = schemathesis.openapi.from_asgi("/openapi.json", served, headers={"Authorization": f"Bearer {ADMIN}"})


@pytest.fixture(autouse=True)
def fuzz_home(monkeypatch):
    monkeypatch.setenv("AIOS_HOME", _HOME)  # the app's token lookups read this catalog


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("AIOS_FUZZ_EXAMPLES", "12")), deadline=None, suppress_health_check=list(HealthCheck)
)
def test_openapi_fuzz_finds_no_5xx(case):
    # A schema-valid infer body can still disagree with the model (shape, datatype): 400 is right there. The
    # language-model routes have no language model to call here (404, or 400 for the mlp), and the one model has
    # no second version to be a canary's candidate: errors are right there.
    model_bound = ("/infer", "/generate", "/generate_stream", "/completions", "/v1/models/{model}", "/canary")
    excluded = [positive_data_acceptance] if case.operation.path.endswith(model_bound) else []
    case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN}"}, excluded_checks=excluded)
