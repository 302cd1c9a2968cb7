"""The V2 server of an exported model: ``python -m aios_lab.export.artifact_server ROOT [--port 8080]``.

What the KServe container runs (``aios export MODEL --to kserve DIR``). It serves the one registry
version copied into ``ROOT/model`` (its files and ``manifest.json``) as ``ROOT/artifact.json`` describes
it (name, version, the manifest's sha256 from the catalog), with the same app as ``aios serve``. There is
no catalog in a container: every file is verified against the manifest at start (a version that does
not verify or load stops the server: the pod never becomes ready), and bearer tokens come from
``AIOS_TOKEN_FILE`` (a mounted Secret holding one token per line) or ``AIOS_TOKEN``. With neither it
refuses to start: the endpoint is never open without a token. Health routes need none (KServe's probes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import AiosError, InvalidInput

ARTIFACT = "artifact.json"


def describe(root: Path) -> dict[str, Any]:
    """``ROOT/artifact.json``: the exported version's name, version and manifest sha256."""
    try:
        return json.loads((root / ARTIFACT).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{root} holds no exported model ({ARTIFACT}: {exc})") from None


def document(root: Path, tokens: list[str]) -> dict[str, Any]:
    """The serve document of the one exported version (see :mod:`aios_lab.cluster.serve_source`)."""
    meta = describe(root)
    version = str(meta["version"])
    return {
        "models": {
            meta["name"]: {
                "follow": int(version),
                "versions": {version: {"path": str(root / "model"), "manifest_sha256": meta["manifest_sha256"]}},
                "aliases": {},
            }
        },
        "tokens": {hashlib.sha256(t.encode()).hexdigest(): {"role": "infer", "expires": None} for t in tokens},
    }


def read_tokens(environ: dict[str, str] | None = None) -> list[str]:
    """Tokens from ``AIOS_TOKEN_FILE`` (one per line) and ``AIOS_TOKEN``; none is an error."""
    env = os.environ if environ is None else environ
    tokens = []
    if env.get("AIOS_TOKEN_FILE"):
        path = Path(env["AIOS_TOKEN_FILE"])
        if not path.is_file():
            raise InvalidInput(f"AIOS_TOKEN_FILE {path} does not exist; mount the token Secret there")
        tokens += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if env.get("AIOS_TOKEN"):
        tokens.append(env["AIOS_TOKEN"].strip())
    if not tokens:
        raise InvalidInput("no bearer token: set AIOS_TOKEN_FILE (a mounted Secret) or AIOS_TOKEN; see the README")
    return tokens


def build_app(root: Path, tokens: list[str], **options: Any):
    """The V2 app over the exported version (``options``: ServeSettings fields)."""
    from ..cluster.serve_source import DocumentSource
    from ..serve.app import V2App
    from ..serve.auth import TokenCache
    from ..serve.repository import Repository
    from ..serve.settings import ServeSettings

    doc = document(root, tokens)
    ((name, entry),) = doc["models"].items()
    only = (f"{name}@{entry['follow']}",)  # asked for by name: a version that does not load stops the start-up
    s = ServeSettings(**options).with_options(poll_interval_s=0, status_interval_s=0, models=only)
    source = DocumentSource(doc)
    return V2App(Repository(source, settings=s), settings=s, tokens=TokenCache(lookup=source.token_lookup))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m aios_lab.export.artifact_server", description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="the folder holding artifact.json and model/")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8080)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..serve.process import configure_jax

    configure_jax()
    try:
        app = build_app(args.root, read_tokens(), host=args.host, port=args.port)
    except AiosError as exc:
        print(f"aios artifact server: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # SIGTERM (a pod being stopped): requests in flight finish first
            app.draining = True
            super().handle_exit(sig, frame)

    cfg = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=app.settings.drain_timeout_s,
    )
    Server(cfg).run()
    return 0 if app.ready or app.draining else 1


if __name__ == "__main__":
    sys.exit(main())
