"""A short look at a Ray cluster from a child process: ``python -m aios_lab.cluster.probe HOST:PORT``.

Connecting makes a process a Ray driver (threads, log redirection, a job in the cluster), so the
kernel never does it: this child connects with the environment it is given (the auth token), prints
one JSON object (the nodes, or ``{"error": kind, "message": ...}``) and exits.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

from ..errors import AiosError

PROBE_TIMEOUT_S = 180.0  # importing Ray and joining as a driver takes seconds, minutes on a busy machine
TCP_TIMEOUT_S = 5.0
NAMESPACE = "aios"
GANG_PREFIX = "aios-"  # the name of every placement group aios makes starts so
_AUTH_REFUSED = "InvalidAuthToken"
# The head answered TCP already: a refused token should not cost Ray's default 20 one-second retries.
PROBE_ENV = {"RAY_NUM_REDIS_GET_RETRIES": "3"}
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")  # only the ones aios gives count


def reachable(host: str, port: int) -> str | None:
    """None if something accepts TCP connections at host:port, else why not (one phrase)."""
    try:
        with socket.create_connection((host, port), timeout=TCP_TIMEOUT_S):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def probe(
    address: str, env: dict[str, str], timeout: float = PROBE_TIMEOUT_S, gang: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The cluster's nodes as the child saw them; an AiosError naming the cause if it could not look.

    ``gang`` (``{"shape", "checkpoint_dir", "dataset_path", "dataset_hash", "known"}``): the child also
    checks that every node that could hold a rank reaches the job's files (``reach.check_nodes``), unless
    that check's key (``reach.key``) is among ``known`` (checked a short while ago); it reports ``"reach"``
    (None, or the problem as one line) and ``"reach_key"``.
    """
    extra = ["--gang", json.dumps(gang)] if gang else []
    try:
        out = subprocess.run(
            [sys.executable, "-m", "aios_lab.cluster.probe", address, *extra],
            env={**{k: v for k, v in os.environ.items() if k not in AUTH_VARS}, **PROBE_ENV, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise AiosError(
            f"the Ray cluster at {address} did not answer within {timeout:.0f} s; is its head up?"
        ) from None
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise AiosError(f"could not look at the Ray cluster at {address}: {tail}")
    result = json.loads(lines[-1])
    if "error" in result:
        kind = "auth" if _AUTH_REFUSED in out.stderr else result["error"]  # Ray logs the refusal, then
        raise AiosError(explain(address, kind, result["message"], env))  # raises a plain ConnectionError
    return result


def explain(address: str, kind: str, message: str, env: dict[str, str]) -> str:
    """One line that says what went wrong and what to do."""
    if kind == "auth":
        if env.get("RAY_AUTH_MODE") == "token":
            return (
                f"the Ray cluster at {address} refused the auth token; `ray get-auth-token` on its head "
                "prints the right one: `%aios cluster connect ADDRESS --token-file FILE`"
            )
        return (
            f"the Ray cluster at {address} requires an auth token; give it with "
            "`%aios cluster connect ADDRESS --token-file FILE` (`ray get-auth-token` on its head prints it)"
        )
    if kind == "version":
        return (
            f"Ray versions differ between here and the cluster at {address}: {message}; install the cluster's version"
        )
    return f"could not connect to the Ray cluster at {address}: {message}"


def describe(ray: Any) -> dict[str, Any]:
    """The nodes of the cluster ``ray`` is connected to, with totals and (where Ray tells) what is free."""
    try:
        from ray._private.state import available_resources_per_node

        free = available_resources_per_node()
    except Exception:  # an internal API: without it, nodes show totals only
        free = {}
    nodes = []
    for n in ray.nodes():
        res = n.get("Resources", {})
        nodes.append(
            {
                "node_id": n["NodeID"],
                "ip": n.get("NodeManagerAddress"),
                "host": n.get("NodeManagerHostname"),
                "alive": bool(n.get("Alive")),
                "head": "node:__internal_head__" in res,
                "resources": _plain(res),
                "available": _plain(free[n["NodeID"]]) if n["NodeID"] in free else None,
            }
        )
    return {"ray_version": ray.__version__, "nodes": nodes, "placement_groups": placed_gangs(ray)}


def placed_gangs(ray: Any) -> list[str]:
    """Ids of aios's placement groups that hold their resources now (state CREATED)."""
    from ray.util.placement_group import placement_group_table

    try:
        table = placement_group_table()
    except Exception:  # without it nothing counts as placed, and the queue waits for the next look
        return []
    return sorted(pg_id for pg_id, pg in table.items() if pg.get("state") == "CREATED" and _ours(pg.get("name")))


def _ours(name: str | None) -> bool:
    return bool(name) and name.startswith(GANG_PREFIX)


def _plain(resources: dict[str, float]) -> dict[str, float]:
    """A node's resources without Ray's per-node and per-placement-group bookkeeping entries."""
    return {k: v for k, v in resources.items() if not k.startswith("node:") and "_group_" not in k}


def _classify(exc: BaseException) -> str:
    text = f"{type(exc).__name__} {exc}"
    if "Authentication" in text or _AUTH_REFUSED in text:
        return "auth"
    if "version mismatch" in text.lower():
        return "version"
    return "connect"


def _check_gang(ray: Any, nodes: list[dict[str, Any]], gang: dict[str, Any]) -> dict[str, Any]:
    from .capacity import GangShape, check_fits
    from .reach import check_nodes, key

    shape = GangShape(**gang["shape"])
    try:
        check_fits(shape, nodes)
    except AiosError:
        return {"reach": None, "reach_key": None}  # the caller refuses it with the cluster's size
    k = key(shape, nodes, gang["checkpoint_dir"], gang["dataset_path"], gang["dataset_hash"])
    if k in gang.get("known", []):
        return {"reach": None, "reach_key": k}
    problem = check_nodes(ray, nodes, shape, gang["checkpoint_dir"], gang["dataset_path"], gang["dataset_hash"])
    return {"reach": problem, "reach_key": k}


def main(address: str, gang: dict[str, Any] | None = None) -> int:
    import logging

    try:
        import ray

        ray.init(
            address=address,
            namespace=NAMESPACE,
            logging_level=logging.ERROR,
            log_to_driver=False,
            configure_logging=False,
        )
        result = describe(ray)
        if gang:
            result.update(_check_gang(ray, result["nodes"], gang))
        ray.shutdown()
    except Exception as exc:  # report every failure as data; the caller words the error
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        result = {"error": _classify(exc), "message": first}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], json.loads(sys.argv[3]) if sys.argv[2:3] == ["--gang"] else None))
