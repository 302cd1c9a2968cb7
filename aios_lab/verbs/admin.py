"""``help``: every verb in a line, or one verb's flags."""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from ..render import Table, Text
from . import VERBS, load_all, verb


@magic_arguments()
@argument("topic", nargs="*", help="a verb, e.g. `train` or `dataset show`")
def help_(args, ctx):
    """Every verb, one line each; `%aios help VERB` for its flags."""
    load_all()
    if args.topic:
        name = " ".join(args.topic)
        if name not in VERBS:
            raise UsageError(f"unknown verb {name!r}; `%aios help` lists them")
        return Text(VERBS[name].help())
    rows = [(("%%aios " if v.cell else "%aios ") + n, v.summary) for n, v in sorted(VERBS.items())]
    return Text(str(Table(["verb", "what it does"], rows)))


verb("help")(help_)
