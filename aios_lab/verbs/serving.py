"""Verbs for the inference endpoint: serve, serve stop, serve canary, endpoints, token create | list | revoke."""

from __future__ import annotations

from IPython.core.magic_arguments import argument, magic_arguments

from ..render import Table, Text, age
from ..serve.settings import magic_flags
from . import verb


@magic_arguments()
@argument("--on", choices=["ray"], help="run on the connected Ray cluster as a Ray Serve deployment")
@argument("--replicas", type=int, help="with --on ray: how many replicas (default 1)")
@magic_flags(exclude=("drain_timeout_s", "status_interval_s", "offload_bytes", "offload_pending"))
def serve(args, ctx):
    """Ensure the V2 inference endpoint runs (detached); prints its URL and how to get a token."""
    from ..serve import ServeSettings, serve as run

    ep = run(settings=ServeSettings.from_args(args), on=args.on, replicas=args.replicas)
    models = ", ".join(sorted(ep.models)) or "none yet (publish one, then POST /v2/repository/models/NAME/load)"
    where = f"pid {ep.pid}"
    if ep.kind == "ray-serve":
        n = ((ep.status or {}).get("replicas") or {}).get("ready", args.replicas or 1)
        where = f"Ray Serve, {n} replica{'s' if n != 1 else ''}, driver pid {ep.pid}"
    llm = (ep.status or {}).get("llm") or {}
    openai = (
        f'language models ({", ".join(llm["models"])}): OpenAI(base_url="{ep.url}/v1", api_key=TOKEN)\n'
        if llm.get("models")
        else ""
    )
    tf = (ep.status or {}).get("tf_serving_url")
    tf_line = f"TensorFlow Serving REST API: {tf}/v1/models/MODEL (same tokens)\n" if tf else ""
    return Text(
        f"serving on {ep.url} ({where}): {models}\n"
        f"{tf_line}"
        f"admin token: the file {ep.token_file} (mode 0600)\n"
        f"a token for clients: aios token create --role infer\n"
        f'call it: curl -H "Authorization: Bearer $(cat {ep.token_file})" {ep.url}/v2/models/MODEL\n'
        f"{openai}"
        f"stop it: aios serve stop --port {ep.port}"
    )


@magic_arguments()
@argument("--port", type=int, help="stop the endpoint on this port")
@argument("--all", action="store_true", help="stop every running endpoint")
def serve_stop(args, ctx):
    """Stop detached endpoints: SIGTERM, requests in flight finish, the catalog row ends 'stopped'."""
    from ..serve import stop

    stopped = stop(args.port, all=args.all)
    return Text("\n".join(f"stopped {e.url} (pid {e.pid})" for e in stopped))


@magic_arguments()
@argument("model", help="the model whose unversioned route is split")
@argument("--version", help="the candidate: a version number or an alias")
@argument("--percent", type=float, help="percent of the unversioned route's requests for the candidate (default 10)")
@argument("--end", action="store_true", help="end the canary: 100%% back to the base in one step")
@argument("--port", type=int, help="the endpoint's port, when several serve the model")
def serve_canary(args, ctx):
    """Split a model's unversioned route between what it serves and a candidate version (a canary), per
    X-Request-ID; with no flags, show the canary and its per-version numbers."""
    from ..serve.canary import canary

    c = canary(args.model, args.version, args.percent, end=args.end, port=args.port)
    arms = c["arms"]
    numbers = "; ".join(
        f"{arm} v{a['version']}: {a['requests']} requests, {a['errors']} errors"
        + (f", {a['mean_ms']:.2f} ms mean" if a["mean_ms"] is not None else "")
        for arm, a in arms.items()
    )
    base = c["base"] if c["base"] is not None else "the newest version"
    if c["state"] == "ended":
        head = f"canary of {c['model']} v{c['version']} ended on {c['endpoint']}: 100% back to {base}"
    else:
        head = (
            f"canary on {c['endpoint']}: {c['model']} v{c['version']} gets {c['percent']:g}% of the unversioned "
            f"route, {base} (v{arms['base']['version']}) the rest; split by the {c['header']} header\n"
            f"end it: %aios serve canary {c['model']} --end"
        )
    return Text(f"{head}\n{numbers}")


@magic_arguments()
def endpoints(args, ctx):
    """Serving endpoints: URL, process, state, models, traffic (requests/s, generated tokens/s), failed hot swaps."""
    from ..serve import endpoints as list_endpoints

    rows = []
    for e in list_endpoints():
        status = e.status or {}
        live = e.state in ("running", "draining")
        rate = status.get("requests_per_s") if live else None
        tokens = (status.get("llm") or {}).get("tokens_per_s") if live else None
        rows.append(
            (
                e.url,
                _kind(e),
                e.pid,
                e.state,
                "; ".join(f"{m} ({', '.join(v)}{_canary(status, m)})" for m, v in sorted(e.models.items())),
                "-" if rate is None else f"{rate:g}",
                "-" if tokens is None else f"{tokens:g}",
                "\n".join(e.problems()),
                age(e.started),
            )
        )
    return Table(
        ["url", "kind", "pid", "state", "models", "req/s", "tok/s", "problems", "age"],
        rows,
        title="endpoints",
        empty="no endpoints: start one with %aios serve",
    )


def _canary(status: dict, model: str) -> str:
    """'; canary v3 10%' for a model whose unversioned route a running canary splits."""
    c = (status.get("canaries") or {}).get(model)
    return f"; canary v{c['version']} {c['percent']:g}%" if c and c["state"] == "running" else ""


def _kind(e) -> str:
    """'local', or 'ray-serve 2/2' (replicas ready / wanted) for a Ray Serve deployment."""
    reps = (e.status or {}).get("replicas") if e.kind == "ray-serve" else None
    return f"{e.kind} {reps['ready']}/{reps['wanted']}" if reps and e.state in ("running", "draining") else e.kind


@magic_arguments()
@argument(
    "--role",
    choices=["infer", "admin"],
    default="infer",
    help="infer: metadata and inference; admin: also load/unload models (default infer)",
)
@argument("--expires", help="how long the token is valid, e.g. 90m, 12h, 30d (default: until revoked)")
@argument("--label", help="a note stored with the token's hash (who or what uses it)")
@argument("--models", help="comma-separated models the token may use (403 on others; default: every model)")
def token_create(args, ctx):
    """Create a bearer token for the endpoint and print it (only its hash is stored)."""
    from ..serve import create_token

    return Text(create_token(args.role, expires=args.expires, label=args.label, models=args.models))


@magic_arguments()
def token_list(args, ctx):
    """Tokens: id, role, label, created, last used, expiry, state (never the token itself)."""
    from ..serve.auth import token_table

    return token_table()


@magic_arguments()
@argument("id", help="the token's id, from `aios token list`")
def token_revoke(args, ctx):
    """Revoke a token: the endpoint answers 401 to it within seconds."""
    from ..serve import revoke_token

    t = revoke_token(args.id)
    return Text(f"revoked token {t.id} ({t.role}{', ' + t.label if t.label else ''})")


verb("serve")(serve)
verb("serve stop")(serve_stop)
verb("serve canary")(serve_canary)
verb("endpoints")(endpoints)
verb("token create")(token_create)
verb("token list")(token_list)
verb("token revoke")(token_revoke)
