"""Verbs for Prometheus: metrics (print them), metrics serve, metrics stop."""

from __future__ import annotations

from IPython.core.magic_arguments import argument, magic_arguments

from ..observability.server import DEFAULT_HOST, DEFAULT_PORT
from ..render import Text
from . import verb


@magic_arguments()
def metrics(args, ctx):
    """Print the job, device and queue metrics as a Prometheus server scrapes them (text format)."""
    from ..observability import render

    return Text(render()[0].decode())


@magic_arguments()
@argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
@argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")
@argument("--detach", action="store_true", help="run in a process of its own and return (always so in a notebook)")
@argument("--insecure", action="store_true", help="allow a --host other than loopback: no token, no TLS")
def metrics_serve(args, ctx):
    """Serve job, device and queue metrics on http://HOST:PORT/metrics for Prometheus to scrape.

    In a terminal it runs in the foreground until Ctrl-C (run it under systemd or tmux); in a notebook, or
    with --detach, it starts a process of its own that outlives the kernel (`aios metrics stop` ends it).
    """
    from .. import observability

    if args.detach or ctx.interactive:
        s = observability.start(args.port, args.host, insecure=args.insecure)
        target = s.url.removeprefix("http://").removesuffix("/metrics")
        return Text(
            f"serving metrics on {s.url} (pid {s.pid})\n"
            f"prometheus.yml: scrape_configs: [{{job_name: aios-jobs, static_configs: [{{targets: ['{target}']}}]}}]\n"
            f"stop it: aios metrics stop --port {s.port}"
        )
    observability.run(
        args.port,
        args.host,
        insecure=args.insecure,
        on_ready=lambda url: print(f"serving metrics on {url} (Ctrl-C stops)", flush=True),
    )
    return Text(f"stopped the metrics server on port {args.port}")


@magic_arguments()
@argument("--port", type=int, help="stop the metrics server on this port")
@argument("--all", action="store_true", help="stop every metrics server")
def metrics_stop(args, ctx):
    """Stop metrics servers started with `aios metrics serve` (SIGTERM)."""
    from ..observability import stop

    return Text("\n".join(f"stopped {s.url} (pid {s.pid})" for s in stop(args.port, all=args.all)))


verb("metrics")(metrics)
verb("metrics serve")(metrics_serve)
verb("metrics stop")(metrics_stop)
