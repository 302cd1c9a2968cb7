"""The V2 server as a Ray Serve deployment: one :class:`V2Replica` per replica, and the deployment's :class:`Hub`.

Imported only where Ray runs (the serve driver and the replicas). Each replica builds the same ASGI app
as ``python -m aios_lab.serve`` (:class:`aios_lab.serve.app.V2App`), with two doors changed: models
come from a :class:`DocumentSource` (the registry as the driver saw it; files verified against their
manifests) and tokens are checked against the hashes in the same document.

The hub is a small actor the driver creates: the driver posts each new serve document there; every
replica exchanges with it once a second (its status and metrics out; the other replicas' metrics and,
when it changed, the document in). A replica that gets a new document loads a moved alias's version
off the event loop and swaps its routing table in one assignment, as the local server's hot swap
does: requests in flight finish on the version they were routed to. (Serve's own ``user_config``
would do the same in theory, but ``serve.run`` gives every deployment a new code version, so each
push would restart the replicas instead of reconfiguring them.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

import ray
from ray import serve

from ..serve.admin import RepositoryAdmin
from ..serve.app import V2App
from ..serve.auth import TokenCache
from ..serve.errors import NotSupported
from ..serve.repository import Repository
from ..serve.settings import ServeSettings
from .serve_metrics import ClusterMetrics
from .serve_source import DocumentSource

log = logging.getLogger("aios_lab.serve")

EXCHANGE_EVERY_S = 1.0
FOLLOWS = (
    "on a Ray Serve deployment the models follow the registry: move an alias or publish a version "
    "(every replica follows within seconds); POST /v2/repository/index lists what is served"
)


@ray.remote(num_cpus=0)
class Hub:
    """The deployment's meeting point: the driver posts documents, replicas leave status and metrics."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc, self.seq = doc, 1
        self.reports: dict[str, dict[str, Any]] = {}

    def post(self, doc: dict[str, Any]) -> int:
        """A new serve document for every replica; returns its sequence number."""
        self.doc, self.seq = doc, self.seq + 1
        return self.seq

    def document(self) -> tuple[int, dict[str, Any]]:
        return self.seq, self.doc

    def exchange(self, replica: str, seq: int, status: dict[str, Any], metrics: str) -> dict[str, Any]:
        """Keep ``replica``'s status and metrics; answer the others' metrics and the document if it is newer."""
        self.reports[replica] = {"received": time.time(), "status": status, "metrics": metrics}
        others = [r["metrics"] for k, r in self.reports.items() if k != replica]
        return {"others": others, "seq": self.seq, "doc": self.doc if seq != self.seq else None}

    def collect(self) -> dict[str, dict[str, Any]]:
        """Every replica's latest status (without the metrics texts)."""
        return {k: {"received": r["received"], "status": r["status"]} for k, r in self.reports.items()}


class FollowingAdmin(RepositoryAdmin):
    """The repository routes of a replica: the index as usual; load and unload refused (models follow the registry)."""

    async def _load(self, name: str, params: dict, ctx: list):
        raise NotSupported(f"cannot load {name!r} here: {FOLLOWS}")

    async def _unload(self, name: str):
        raise NotSupported(f"cannot unload {name!r} here: {FOLLOWS}")


@serve.deployment
@serve.ingress()
class V2Replica:
    """One replica: the V2 app over the serve document it gets from the hub."""

    async def __init__(self, settings: dict[str, Any], hub: str, namespace: str = "aios"):
        from ..serve.process import configure_jax

        configure_jax()
        base = ServeSettings(**settings)
        self.models = base.models  # asked for by name: loading them must succeed
        # No registry poll and no catalog row here: the driver does both and posts what changed.
        s = base.with_options(models=None, poll_interval_s=0, status_interval_s=0)
        self.source = DocumentSource()
        self.metrics = ClusterMetrics()
        self.v2 = V2App(
            Repository(self.source, settings=s),
            settings=s,
            metrics=self.metrics,
            tokens=TokenCache(lookup=self.source.token_lookup),
        )
        self.v2.admin = FollowingAdmin(self.v2)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.node_id = ray.get_runtime_context().get_node_id()
        self.hub = ray.get_actor(hub, namespace=namespace)
        self.seq, doc = await self.hub.document.remote()
        self.source.update(doc)
        await asyncio.to_thread(self._follow)  # models load (and compile) before the replica takes traffic
        self._task = asyncio.get_running_loop().create_task(self._exchange_forever())

    def __serve_build_asgi_app__(self) -> V2App:
        return self.v2

    def _follow(self) -> None:
        """Load models new to the document and follow moved aliases (blocking: run in a thread)."""
        repo = self.v2.repository
        for name in self.source.names():
            if name in repo.entries:
                continue
            try:
                repo.load(name, self.source.follows(name))
            except Exception as exc:
                if self.models is not None:  # asked for by name: fail loudly (the deployment does not start)
                    raise
                repo.load_failures[name] = str(exc)
                log.warning("not serving %s: %s", name, exc)
        repo.refresh()

    async def check_health(self) -> None:
        if self.v2.draining:
            raise RuntimeError("draining")

    def status(self) -> dict[str, Any]:
        """This replica's status document (as the local server publishes it) with where it runs."""
        doc = self.v2.lifecycle.status_doc()
        doc.update(
            replica=self.replica_id,
            node_id=self.node_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            served=self.v2.repository.summary(),
            document=self.seq,
        )
        return doc

    async def _exchange_forever(self) -> None:
        """Every second: status and metrics to the hub; a newer document back is followed at once."""
        while True:
            try:
                got = await self.hub.exchange.remote(self.replica_id, self.seq, self.status(), self.metrics.own_text())
                self.metrics.others = got["others"]
                if got["doc"] is not None:
                    self.source.update(got["doc"])
                    await asyncio.to_thread(self._follow)
                    self.seq = got["seq"]
                elif self.v2.repository.failures:  # a failed hot swap is tried again once its back-off passed
                    await asyncio.to_thread(self.v2.repository.refresh)
            except Exception as exc:  # the driver and its hub may be gone: keep serving what is loaded
                log.warning("exchange with the hub failed: %s", exc)
            await asyncio.sleep(EXCHANGE_EVERY_S)
