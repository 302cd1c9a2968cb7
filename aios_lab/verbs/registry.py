"""Verbs for compression and the model registry: compress, publish, models, model show/alias/delete, audit."""

from __future__ import annotations

from IPython.core.magic_arguments import argument, magic_arguments

from ..errors import AiosError
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
@argument("job", help="the job whose checkpoint (or variant) to publish")
@argument("--as", dest="as_", required=True, metavar="MODEL", help="the registry model; each publish adds a version")
@argument("--variant", help="a compressed variant made by %%aios compress, e.g. int8")
@argument("--checkpoint", help="best | latest | STEP (default latest, or the variant's own step)")
@argument("--alias", help="point this alias (e.g. production, staging) at the new version")
def publish(args, ctx):
    """Publish a job's checkpoint or compressed variant as an immutable, verified model version."""
    from ..registry import publish as run

    return run(args.job, variant=args.variant, checkpoint=args.checkpoint, as_=args.as_, alias=args.alias)


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

    return _Both(get(args.model, args.version), models_table(args.model))


@magic_arguments()
@argument("model", help="a registered model")
@argument("alias", help="e.g. production or staging")
@argument("version", nargs="?", help="the version to point at; omit with --remove")
@argument("--remove", action="store_true", help="remove the alias instead")
def model_alias(args, ctx):
    """Move an alias (production, staging, ...) to a version of a model."""
    from ..registry import models_table, set_alias

    if args.remove == (args.version is not None):
        raise AiosError("give a VERSION to point the alias at, or --remove (not both)")
    set_alias(args.model, args.alias, None if args.remove else args.version)
    return models_table(args.model)


@magic_arguments()
@argument("model", help="a registered model")
@argument("version", help="the version to delete")
@argument("--force", action="store_true", help="delete even if an alias points at it (the alias goes too)")
def model_delete(args, ctx):
    """Delete one version of a model (files and catalog row; written to the audit log)."""
    from ..registry import delete, models_table

    delete(args.model, args.version, force=args.force)
    return models_table(args.model)


@magic_arguments()
@argument("--tail", type=int, default=50, help="the newest N rows (0 for all; default 50)")
@argument("--action", help="only this action, e.g. publish, load, alias, delete")
@argument("--object", dest="obj", help="only objects starting with this, e.g. a model name")
def audit(args, ctx):
    """The audit log: who published, loaded, aliased, deleted (and more) what, and when."""
    from ..catalog import audit_table

    return audit_table(args.tail or None, args.action, args.obj)


class _Both:
    """Two tables shown one after the other (text in a terminal, HTML in a notebook)."""

    def __init__(self, *parts):
        self.parts = parts

    def __str__(self) -> str:
        return "\n\n".join(str(p) for p in self.parts)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return "".join(p._repr_html_() for p in self.parts)


verb("compress")(compress)
verb("publish")(publish)
verb("models")(models)
verb("model show")(model_show)
verb("model alias")(model_alias)
verb("model delete")(model_delete)
verb("audit")(audit)
