"""The server process: ``python -m aios_lab.serve [flags]`` builds the app from :class:`ServeSettings`, runs it
on uvicorn, and drains on SIGTERM (requests in flight finish, the catalog row ends 'stopped')."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from .. import config
from .settings import DEFAULTS, ServeSettings, cli_arguments

log = logging.getLogger("aios_lab.serve")


def configure_jax() -> None:
    """Server-side JAX settings; call before JAX runs anything."""
    import jax

    # With async dispatch each call is handed to another thread: about 3x slower for a batch-1 forward.
    jax.config.update("jax_cpu_enable_async_dispatch", False)


def build_app(settings: ServeSettings | None = None, *, access_log: Any = None, record: bool = False, **options: Any):
    """The app as the server process runs it (``options``: ServeSettings fields); ``record=True`` keeps the
    endpoint's catalog row and audit entries."""
    from .app import V2App
    from .control import EndpointRow

    s = (settings or DEFAULTS).with_options(**options)
    return V2App(settings=s, access_log=access_log, row=EndpointRow(s) if record else None)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m aios_lab.serve", description="the aios_lab V2 inference server")
    for args, kwargs in cli_arguments():
        p.add_argument(*args, **kwargs)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m aios_lab.serve``: run the server in the foreground until SIGTERM (drains first)."""
    config.private_umask()
    s = ServeSettings.from_args(parser().parse_args(argv))
    from .tls import check_transport, uvicorn_ssl

    check_transport(s)  # no plain HTTP off loopback without --insecure; a key that fits its certificate
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_jax()
    import uvicorn

    from .auth import default_token

    default_token()
    access = config.open_private(config.area("serve") / f"{s.port}.access.log", "ab", buffering=1 << 16)
    app = build_app(s, access_log=access, record=True)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # SIGTERM/SIGINT: stop taking work, let requests in flight finish
            if not app.draining:
                app.draining = True
                log.info("draining (signal %s)", sig)
                app.lifecycle.write_row("draining", app.lifecycle.status_doc())
            super().handle_exit(sig, frame)

    cfg = uvicorn.Config(
        app,
        host=s.host,
        port=s.port,
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=s.drain_timeout_s,
        timeout_keep_alive=30,
        h11_max_incomplete_event_size=1 << 20,
        **uvicorn_ssl(s),
    )
    if s.tf_serving_port:  # TensorFlow Serving's REST API on its own port, same process and models
        from .tf_serving import serve_both

        serve_both(Server(cfg), app, **uvicorn_ssl(s))
    else:
        Server(cfg).run()
    access.close()
    return 0 if app.ready or app.draining else 1
