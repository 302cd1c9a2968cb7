"""``%%aios model NAME``: save the cell as a versioned model definition after checking it initialises."""

from __future__ import annotations

from IPython.core.magic_arguments import argument, magic_arguments

from ..render import Text
from . import verb


@magic_arguments()
@argument("name", help="model name: 1-64 of a-z 0-9 . _ -")
@argument("--dataset", default=None, help="check the model on a sample batch of this dataset (NAME or NAME@V)")
@argument(
    "--task",
    default=None,
    choices=["classification", "regression", "lm"],
    help="task to check the outputs against (default: the dataset's, else classification)",
)
def model(args, ctx):
    """Define a model from the cell: a flax.linen Module, or init(rng, x) and apply(params, x) functions."""
    from ..train import models
    from ..train.trainer import task_and_outputs

    sample, task, n_outputs = None, args.task or "classification", 10
    if args.dataset:
        from ..data import get

        name, _, version = args.dataset.partition("@")
        ds = get(name, int(version) if version else None)
        task, n_outputs = task_and_outputs(ds, args.task)
        sample = ds.load("train")[0][:2]
    name, version = models.define(args.name, ctx.cell or "", sample=sample, task=task, n_outputs=n_outputs)
    return Text(f"model {name} version {version} saved; train it with `%aios train JOB --model {name} ...`")


verb("model", cell=True)(model)
