"""Verbs for the Ray cluster target: cluster, cluster connect, cluster disconnect."""

from __future__ import annotations

from IPython.core.magic_arguments import argument, magic_arguments

from ..render import Table, Text, age, nbytes
from . import verb


@magic_arguments()
def cluster(args, ctx):
    """The connected Ray cluster's nodes: CPUs, GPUs or TPUs, memory, what is free and what aios runs."""
    from ..cluster import status

    return nodes_table(status())


@magic_arguments()
@argument("address", help="the Ray head's HOST:PORT (what `ray start --head` printed)")
@argument("--token-file", help="a file holding the cluster's Ray auth token (`ray get-auth-token` on the head)")
@argument("--no-auth", action="store_true", help="the cluster runs without RAY_AUTH_MODE=token")
def cluster_connect(args, ctx):
    """Make a Ray cluster this AIOS_HOME's target, after checking it answers with the token."""
    from ..cluster import connect

    return nodes_table(connect(args.address, token_file=args.token_file, no_auth=args.no_auth))


@magic_arguments()
def cluster_disconnect(args, ctx):
    """Forget the connected Ray cluster (its address and the copy of its token)."""
    from ..cluster import disconnect

    return Text("disconnected" if disconnect() else "no Ray cluster was connected")


def nodes_table(s) -> Table:
    """A ClusterStatus as a table, one row per node."""
    rows = []
    for n in s.nodes:
        accel = ", ".join(f"{int(v)} {k}" for k, v in (("GPU", n.gpus), ("TPU", n.tpus)) if v) or "-"
        free = n.available or {}
        free_text = (
            "-"
            if n.available is None
            else f"{free.get('CPU', 0):g} CPU" + "".join(f", {free[k]:g} {k}" for k in ("GPU", "TPU") if free.get(k))
        )
        rows.append(
            (
                n.host or n.ip,
                n.ip,
                "head" if n.head else "",
                "alive" if n.alive else "dead",
                f"{n.cpus:g}",
                accel,
                nbytes(n.memory),
                free_text,
                ", ".join(n.aios) or "-",
            )
        )
    title = f"Ray cluster {s.address} (Ray {s.ray_version}, auth {s.auth}, looked {age(s.checked)} ago)"
    return Table(["node", "ip", "", "state", "CPUs", "accelerators", "memory", "free", "aios"], rows, title=title)


verb("cluster")(cluster)
verb("cluster connect")(cluster_connect)
verb("cluster disconnect")(cluster_disconnect)
