"""``dataset``, ``datasets`` and ``dataset show``: declare, list and look at datasets."""

from __future__ import annotations

from IPython.core.magic_arguments import argument, magic_arguments

from ..render import Table, age, nbytes
from . import verb


@magic_arguments()
@argument("name", help="dataset name: a-z, 0-9, '.', '_', '-' (e.g. digits)")
@argument(
    "--from",
    dest="source",
    required=True,
    help="vars:X,y | sklearn:NAME | PATH.npz|.npy|.csv | zarr path or fsspec URL | text:GLOB",
)
@argument("--split", default=None, help="fractions summing to 1 (default train=0.8,val=0.1,test=0.1)")
@argument("--seed", type=int, default=0, help="seed of the split's shuffle (default 0)")
@argument("--target", default=None, help="target column of a CSV / DataFrame (default: target/label/y, else the last)")
@argument("--block", type=int, default=None, help="text: tokens per sample (default 128)")
def dataset_(args, ctx):
    """Declare a dataset from a source; the same content again returns the existing version."""
    from ..data import dataset

    return dataset(
        args.name,
        args.source,
        split=args.split,
        seed=args.seed,
        target=args.target,
        user_ns=ctx.user_ns,
        block=args.block,
    )


@magic_arguments()
@argument("name", nargs="?", default=None, help="only this dataset's versions")
def datasets_(args, ctx):
    """Table of datasets: versions, task, splits, shapes, sizes."""
    from ..data import datasets

    rows = [
        (
            d.name,
            d.version,
            d.task,
            d.n_classes,
            " ".join(f"{k}={v}" for k, v in d.splits.items()),
            f"{d.feature_dtype}{list(d.feature_shape)}",
            nbytes(d.nbytes),
            d.source,
            age(d.created),
        )
        for d in datasets(args.name)
    ]
    return Table(
        ["name", "version", "task", "classes", "splits", "x", "size", "source", "age"],
        rows,
        title="datasets",
        empty="no datasets yet: `%aios dataset NAME --from SOURCE` declares one",
    )


@magic_arguments()
@argument("name", help="dataset name, or NAME:vN for one version")
@argument("--version", default=None, help="version number (default: the newest)")
@argument("--split", default=None, help="split to draw samples from (default train)")
def dataset_show(args, ctx):
    """Schema, split sizes, class balance and a picture of samples."""
    from ..data import get
    from ..data.show import show

    return show(get(args.name, args.version), args.split)


verb("dataset")(dataset_)
verb("datasets")(datasets_)
verb("dataset show")(dataset_show)
