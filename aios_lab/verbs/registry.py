"""Verbs for compression and the model registry: compress, publish, models, model show/alias/delete, audit,
promote, rollback, lineage and alias protect."""

from __future__ import annotations

import html

from IPython.core.magic_arguments import argument, magic_arguments

from ..errors import InvalidInput
from ..render import Text
from . import verb


@magic_arguments()
@argument("job", help="a job with at least one checkpoint")
@argument(
    "--method", required=True, help="int8 | int4[:GROUP] | bf16 | prune:FRACTION, or combined, e.g. prune:0.5+int8"
)
@argument(
    "--eval", help="a split of the job's dataset (default val, else test), DATASET or DATASET:SPLIT; none to skip"
)
@argument("--checkpoint", default="latest", help="best | latest | STEP (default latest)")
@argument("--batch", type=int, default=256, help="rows per forward pass when evaluating and timing")
def compress(args, ctx):
    """Compress a job's checkpoint (quantise/prune), compare it with the original and keep it as a variant."""
    from ..compress import compress as run

    return run(args.job, args.method, eval=args.eval, checkpoint=args.checkpoint, batch=args.batch)


@magic_arguments()
@argument("job", help="the job whose checkpoint (or variant) to publish; with --best, a sweep")
@argument("--as", dest="as_", required=True, metavar="MODEL", help="the registry model; each publish adds a version")
@argument("--variant", help="a compressed variant made by %%aios compress, e.g. int8")
@argument("--checkpoint", help="best | latest | STEP (default latest, or the variant's own step)")
@argument("--alias", help="point this alias (e.g. production, staging) at the new version")
@argument(
    "--adapters",
    action="store_true",
    help="a LoRA job: keep the adapters apart from their base version (default: merge them into it)",
)
@argument("--best", action="store_true", help="JOB is a sweep: publish its best trial, the sweep in its lineage")
def publish(args, ctx):
    """Publish a job's checkpoint or compressed variant as an immutable, verified model version."""
    from ..registry import publish as run

    if args.best:
        from ..sweeps import sweep

        return sweep(args.job).publish(args.as_, alias=args.alias, checkpoint=args.checkpoint)

    return run(
        args.job,
        variant=args.variant,
        checkpoint=args.checkpoint,
        as_=args.as_,
        alias=args.alias,
        adapters=args.adapters,
    )


@magic_arguments()
@argument("model", nargs="?", help="only this model's versions")
def models(args, ctx):
    """Registered models: versions, aliases, sizes, metrics, lineage."""
    from ..registry import models_table

    return models_table(args.model)


@magic_arguments()
@argument("model", help="a registered model")
@argument("version", nargs="?", help="a version number or alias (default: the newest)")
def model_show(args, ctx):
    """One model version in detail: signature, metrics, lineage, hashes; then every version of it."""
    from ..registry import get, models_table

    return Both(get(args.model, args.version), models_table(args.model))


@magic_arguments()
@argument("model", help="a registered model")
@argument("alias", help="e.g. production or staging")
@argument("version", nargs="?", help="the version to point at; omit with --remove")
@argument("--remove", action="store_true", help="remove the alias instead")
def model_alias(args, ctx):
    """Move an alias (production, staging, ...) to a version of a model."""
    from ..registry import models_table, set_alias

    if args.remove == (args.version is not None):
        raise InvalidInput("give a VERSION to point the alias at, or --remove (not both)")
    set_alias(args.model, args.alias, None if args.remove else args.version)
    return models_table(args.model)


@magic_arguments()
@argument("model", metavar="MODEL[@V]", help="a registered model (every version) or one version, e.g. digits@2")
@argument("version", nargs="?", help="the version to delete (the same as MODEL@V)")
@argument("--force", action="store_true", help="delete even if an alias points at it (the alias goes too)")
def model_delete(args, ctx):
    """Delete a model version (or all of them): files and catalog rows; written to the audit log."""
    from ..registry import delete, models_table

    gone = delete(args.model, args.version, force=args.force)
    return models_table(gone[0].name)


@magic_arguments()
@argument("model", help="a registered model")
@argument("--to", required=True, metavar="ALIAS", help="the alias to move, e.g. production")
@argument("--from", dest="from_", metavar="ALIAS", help="the candidate is what this alias points at, e.g. staging")
@argument("--version", help="the candidate version (default: --from's target, else the newest)")
@argument(
    "--require",
    metavar="CONDITIONS",
    help='e.g. "accuracy>=0.95,latency_p99_ms<=5": metrics (loss, accuracy, perplexity, mse, latency_p50_ms, '
    "latency_p99_ms) that must all hold, else nothing moves",
)
@argument("--on", metavar="DATASET[:SPLIT]", help="the data to evaluate on, e.g. digits:test or digits@2:val")
@argument("--samples", type=int, default=100, help="single-row predicts timed for the latency (default 100)")
def promote(args, ctx):
    """Move an alias to a candidate version if every --require condition holds on --on's data (a release gate)."""
    from ..registry import promote as run
    from .lm import unquote  # IPython's argument splitting keeps the quotes of "accuracy>=0.95"

    return run(
        args.model,
        args.to,
        from_=args.from_,
        version=args.version,
        require=unquote(args.require),
        on=unquote(args.on),
        samples=args.samples,
    )


@magic_arguments()
@argument("model", help="a registered model")
@argument("alias", nargs="?", default="production", help="the alias to move back (default production)")
def rollback(args, ctx):
    """Move an alias back to the version it pointed at before its last move (again to go further back)."""
    from ..registry import models_table, rollback as run

    mv = run(args.model, args.alias)
    return Both(Text(f"{args.model}@{args.alias} rolled back to v{mv.version}"), models_table(args.model))


@magic_arguments()
@argument("ref", metavar="MODEL[:V]", help="a model version (number or alias; default the newest)")
@argument("--json", dest="as_json", action="store_true", help="print the chain as JSON")
def lineage(args, ctx):
    """The chain behind a model version: dataset -> job (commit, notebook, config) -> variant -> version -> aliases."""
    import json

    from ..registry import lineage as run

    chain = run(args.ref)
    return Text(json.dumps(chain.to_json(), indent=1, default=str)) if args.as_json else chain


@magic_arguments()
@argument("model", help="a registered model")
@argument("alias", help="the alias to protect (production always is)")
@argument("--off", action="store_true", help="lift the protection instead")
def alias_protect(args, ctx):
    """Protect an alias: from then on only promote and rollback move it (production is always protected)."""
    from ..registry import protect, protected

    protect(args.model, args.alias, on=not args.off)
    return Text(f"protected aliases of {args.model}: {', '.join(protected(args.model))}")


@magic_arguments()
@argument("--tail", type=int, default=50, help="the newest N rows (0 for all; default 50)")
@argument("--action", help="only this action, e.g. publish, load, alias, delete")
@argument("--object", dest="obj", help="only objects starting with this, e.g. a model name")
def audit(args, ctx):
    """The audit log: who published, loaded, aliased, deleted (and more) what, and when."""
    from ..catalog import audit_table

    return audit_table(args.tail or None, args.action, args.obj)


class Both:
    """Two tables shown one after the other (text in a terminal, HTML in a notebook)."""

    def __init__(self, *parts):
        self.parts = parts

    def __str__(self) -> str:
        return "\n\n".join(str(p) for p in self.parts)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return "".join(
            p._repr_html_() if hasattr(p, "_repr_html_") else f"<pre>{html.escape(str(p))}</pre>" for p in self.parts
        )


verb("compress")(compress)
verb("publish")(publish)
verb("models")(models)
verb("model show")(model_show)
verb("model alias")(model_alias)
verb("model delete")(model_delete)
verb("audit")(audit)
verb("promote")(promote)
verb("rollback")(rollback)
verb("lineage")(lineage)
verb("alias protect")(alias_protect)
