"""``aios demo``: the quickstart headless, ending with a summary table (see ``aios_lab.demo``)."""

from __future__ import annotations

from IPython.core.magic_arguments import argument, magic_arguments

from . import verb


@magic_arguments()
@argument("--steps", type=int, default=300, help="training steps (default 300)")
@argument("--devices", default="all", help="N or all (default all)")
@argument("--port", type=int, help="port of the endpoint (default: a free one)")
@argument("--calls", type=int, default=100, help="timed calls to the endpoint (default 100)")
@argument("--scratch", action="store_true", help="use a new temporary AIOS_HOME even when AIOS_HOME is set")
@argument("--keep-serving", action="store_true", help="leave the endpoint running at the end (default: stop it)")
def demo(args, ctx):
    """The quickstart, headless: dataset, training, int8, publish, serve, 100 calls; prints a summary table."""
    from ..demo import run_demo

    return run_demo(
        steps=args.steps,
        devices=args.devices,
        port=args.port,
        calls=args.calls,
        scratch=args.scratch,
        keep_serving=args.keep_serving,
    )


verb("demo")(demo)
