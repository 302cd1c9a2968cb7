"""``%%aios model NAME``: save the cell as a versioned model definition once it runs.

With ``--dataset`` the model is also checked on that dataset's shapes now; without it no shape is
assumed, and a job checks the model against its own dataset when it starts.
"""

from __future__ import annotations

from IPython.core.magic_arguments import argument, magic_arguments

from ..render import Text
from ..train.config import CHOICES
from . import verb


@magic_arguments()
@argument("name", help="model name: 1-64 of a-z 0-9 . _ -")
@argument("--dataset", default=None, help="check the model on a sample batch of this dataset (NAME or NAME@V)")
@argument(
    "--task",
    default=None,
    choices=CHOICES["task"],
    help="task to check the outputs against with --dataset (default: the dataset's)",
)
def model(args, ctx):
    """Define a model from the cell: a flax.linen Module, or init(rng, x) and apply(params, x) functions."""
    from ..train import models

    sample, task, n_outputs = None, args.task or "classification", None
    if args.dataset:
        from ..data import get
        from ..train.trainer import task_and_outputs

        name, _, version = args.dataset.partition("@")
        ds = get(name, version or None)
        task, n_outputs = task_and_outputs(ds, args.task)
        sample = ds.arrays("train")[0][:2]
    name, version = models.define(args.name, ctx.cell or "", sample=sample, task=task, n_outputs=n_outputs)
    if sample is None:
        return Text(
            f"model {name} version {version} saved; a job checks it on its dataset's shapes when it starts "
            f"(`%%aios model {name} --dataset D` checks it now); train it with `%aios train JOB --model {name} ...`"
        )
    return Text(
        f"model {name} version {version} saved and checked on {ds.name}; "
        f"train it with `%aios train JOB --model {name} ...`"
    )


verb("model", cell=True)(model)
