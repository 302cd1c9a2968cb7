"""``dataset``, ``datasets``, ``dataset show`` and ``dataset delete``: declare, list, look at and delete datasets."""

from __future__ import annotations

from IPython.core.magic_arguments import argument, magic_arguments

from ..render import Text, nbytes
from . import verb


@magic_arguments()
@argument("name", help="dataset name: a-z, 0-9, '.', '_', '-' (e.g. digits)")
@argument(
    "--from",
    dest="source",
    required=True,
    help="vars:X,y | sklearn:NAME | PATH.npz|.npy|.csv | zarr path or fsspec URL | text:GLOB | jsonl:PATH",
)
@argument("--split", default=None, help="fractions summing to 1 (default train=0.8,val=0.1,test=0.1)")
@argument("--seed", type=int, default=0, help="seed of the split's shuffle (default 0)")
@argument("--target", default=None, help="target column of a CSV / DataFrame (default: target/label/y, else the last)")
@argument(
    "--block",
    type=int,
    default=None,
    help="tokens per row (text: default 128; jsonl: default the longest document, packed 2048, at most the context)",
)
@argument("--tokenizer", metavar="MODEL", help="jsonl: tokenize with this registry language model (NAME[:V|ALIAS])")
@argument(
    "--format",
    dest="fmt",
    choices=("text", "completion", "chat"),
    help="jsonl: records {text} | {prompt, completion} | {messages}; the loss covers all | the completion | replies",
)
@argument("--pack", action="store_true", help="jsonl: pack documents into rows (segment ids keep them apart)")
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
        tokenizer=args.tokenizer,
        format=args.fmt,
        pack=args.pack,
    )


@magic_arguments()
@argument("name", nargs="?", default=None, help="only this dataset, one row per version")
def datasets_(args, ctx):
    """Table of datasets: versions, task, splits, shapes and disk use (each version with a NAME)."""
    from ..data.show import datasets_table

    return datasets_table(args.name)


@magic_arguments()
@argument("name", help="dataset name, or NAME:vN for one version")
@argument("--version", default=None, help="version number (default: the newest)")
@argument("--split", default=None, help="split to draw samples from (default train)")
def dataset_show(args, ctx):
    """Schema, split sizes, class balance and a picture of samples."""
    from ..data import get
    from ..data.show import show

    return show(get(args.name, args.version), args.split)


@magic_arguments()
@argument("ref", metavar="NAME[@V]", help="a dataset (every version) or one version, e.g. digits@2")
@argument(
    "--force",
    action="store_true",
    help="delete even if a queued job or a model's lineage refers to it (never under a running job)",
)
def dataset_delete(args, ctx):
    """Delete a dataset version (or all of them): files and catalog rows; written to the audit log."""
    from ..data import delete

    gone = delete(args.ref, force=args.force)
    freed = sum(d.nbytes for d in gone)
    return Text(f"deleted {', '.join(d.ref for d in gone)} ({nbytes(freed)} freed)")


verb("dataset")(dataset_)
verb("datasets")(datasets_)
verb("dataset show")(dataset_show)
verb("dataset delete")(dataset_delete)
