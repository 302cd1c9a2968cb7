"""Verbs for the inference endpoint: serve, endpoints, token create."""

from __future__ import annotations

from IPython.core.magic_arguments import argument, magic_arguments

from ..render import Table, Text, age
from . import verb


@magic_arguments()
@argument("--port", type=int, default=8500, help="TCP port (default 8500)")
@argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
@argument("--models", help="comma-separated models to serve: NAME, NAME@VERSION or NAME@ALIAS (default: all)")
@argument("--max-batch-size", type=int, default=32, help="rows per batched forward pass (default 32)")
@argument(
    "--max-queue-delay-ms",
    type=float,
    default=2.0,
    help="longest a request waits for others to join its batch, only while others are arriving (default 2)",
)
@argument("--no-batching", action="store_true", help="run every request on its own")
def serve(args, ctx):
    """Ensure the V2 inference endpoint runs (detached); prints its URL and how to get a token."""
    from ..serve import serve as run

    ep = run(
        port=args.port,
        host=args.host,
        models=args.models.split(",") if args.models else None,
        max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms,
        batching=not args.no_batching,
    )
    models = ", ".join(sorted(ep.models)) or "none yet (publish one, then POST /v2/repository/models/NAME/load)"
    return Text(
        f"serving on {ep.url} (pid {ep.pid}): {models}\n"
        f"admin token: the file {ep.token_file} (mode 0600)\n"
        f"a token for clients: aios token create --role infer\n"
        f'call it: curl -H "Authorization: Bearer $(cat {ep.token_file})" {ep.url}/v2/models/MODEL'
    )


@magic_arguments()
def endpoints(args, ctx):
    """Serving endpoints: URL, process, state, models."""
    from ..serve import endpoints as list_endpoints

    rows = [
        (e.url, e.pid, e.state, "; ".join(f"{m} ({', '.join(v)})" for m, v in sorted(e.models.items())), age(e.started))
        for e in list_endpoints()
    ]
    return Table(
        ["url", "pid", "state", "models", "age"],
        rows,
        title="endpoints",
        empty="no endpoints: start one with %aios serve",
    )


@magic_arguments()
@argument(
    "--role",
    choices=["infer", "admin"],
    default="infer",
    help="infer: metadata and inference; admin: also load/unload models (default infer)",
)
@argument("--label", help="a note stored with the token's hash (who or what uses it)")
def token_create(args, ctx):
    """Create a bearer token for the endpoint and print it (only its hash is stored)."""
    from ..serve import create_token

    return Text(create_token(args.role, label=args.label))


verb("serve")(serve)
verb("endpoints")(endpoints)
verb("token create")(token_create)
