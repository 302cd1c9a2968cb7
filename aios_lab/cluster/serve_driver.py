"""The detached process that owns a Ray Serve deployment of the V2 server: ``python -m aios_lab.cluster.serve_driver``.

The kernel never joins the cluster; this process does (``ray_session``). It starts Serve's HTTP proxy
on the head, creates the deployment's hub (:class:`~aios_lab.cluster.serve_replica.Hub`) holding the
serve document, deploys :class:`~aios_lab.cluster.serve_replica.V2Replica`, then, until SIGTERM:

* every ``poll_interval_s`` reads the local catalog again (models, versions, aliases, token hashes);
  when the document changed it posts it to the deployment's hub, which every replica asks once a
  second: a moved alias, a new version or a revoked token reaches all of them within about 2 s;
* every ``status_interval_s`` writes the endpoint's catalog row (kind ``ray-serve``) from what the
  replicas reported (requests, errors, failed swaps, which node each replica runs on).

On SIGTERM it deletes the application (Serve lets requests in flight finish), shuts Serve down if no
other application is left on the cluster, and ends the row 'stopped'. It is the only writer of the
local catalog for the deployment; nothing on the cluster reads the catalog.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from .. import config
from ..catalog import catalog
from ..errors import AiosError, InvalidInput
from ..serve.settings import ServeSettings, cli_arguments
from . import target as targetlib

log = logging.getLogger("aios_lab.cluster.serve")

KIND = "ray-serve"
DEPLOYMENT = "aios-v2"
NAMESPACE = "aios"
FRESH_S = 10.0  # a replica that has not reported for this long is not counted as ready
GONE_S = 60.0  # ... and after this long it is no longer listed (its requests still count in the totals)
CONSTRUCTOR_RETRIES = 3


def app_name(port: int) -> str:
    return f"aios-{port}"


def hub_name(port: int) -> str:
    return f"aios-serve-hub-{port}"


# -- the serve document (what every replica is sent) --------------------------------------------


def _wanted(models: tuple[str, ...] | None) -> dict[str, int | str | None]:
    """model -> what to follow (None: production alias or newest; an int pins a version; a str is an alias)."""
    from ..registry import model_names

    if models is None:
        return {name: None for name in model_names()}
    out: dict[str, int | str | None] = {}
    for m in models:
        name, _, ref = m.partition("@")
        out[name] = None if not ref else int(ref) if ref.isdecimal() else ref
    return out


def document(models: tuple[str, ...] | None) -> dict[str, Any]:
    """The serve document from the local catalog: models asked for (default: every one), token hashes.

    A model or version asked for by name that the registry lacks is a one-line error."""
    from ..registry import list_models, resolve

    out: dict[str, Any] = {"models": {}, "tokens": {}}
    for name, follow in _wanted(models).items():
        if models is not None:
            resolve(name, follow)  # NotFound: no such model, version or alias
        rows = list_models(name)
        out["models"][name] = {
            "follow": follow,
            "versions": {str(mv.version): {"path": mv.path, "manifest_sha256": mv.manifest_sha256} for mv in rows},
            "aliases": {a: mv.version for mv in rows for a in mv.aliases},
        }
    for r in catalog().query("SELECT hash, role, expires, models FROM tokens WHERE revoked IS NULL"):
        if r["expires"] is None or r["expires"] > time.time():
            scope = json.loads(r["models"]) if r["models"] else None  # the models a scoped token may use
            out["tokens"][r["hash"]] = {"role": r["role"], "expires": r["expires"], "models": scope}
    return out


# -- the endpoint's catalog row -----------------------------------------------------------------


def serve_url(settings: ServeSettings, t: targetlib.Target) -> tuple[str, str]:
    """(the address the proxy binds, the endpoint's URL): a loopback --host means the head's own address."""
    head = targetlib.parse_address(t.address)[0]
    bind = head if settings.host in ("127.0.0.1", "localhost", "::1") else settings.host
    shown = head if bind in ("0.0.0.0", "::") else bind
    return bind, dataclasses.replace(settings, host=shown).url


class Row:
    """The deployment's row in the catalog's ``endpoints`` table (``kind`` = ray-serve) and its audit entries."""

    def __init__(self, url: str, host: str, port: int):
        self.url, self.host, self.port = url, host, port

    def write(self, state: str, models: dict, status: dict | None) -> None:
        now = time.time()
        with catalog().tx() as db:
            row = db.execute("SELECT started, pid FROM endpoints WHERE url = ?", (self.url,)).fetchone()
            started = row["started"] if row is not None and row["pid"] == os.getpid() else now
            db.execute(
                "INSERT OR REPLACE INTO endpoints (url, host, port, pid, models, state, started, updated, status, kind)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                (self.url, self.host, self.port, os.getpid(), json.dumps(models), state, started, now)
                + (json.dumps(status) if status is not None else None, KIND),
            )

    def audit(self, action: str, **details: Any) -> None:
        catalog().audit(action, self.url, pid=os.getpid(), kind=KIND, **details)


# -- status: what the replicas reported, summed ------------------------------------------------


class Status:
    """Builds the endpoint's status document (docs/architecture.md) from the replicas' reports."""

    def __init__(self, replicas: int, address: str, interval: float):
        self.replicas, self.address, self.interval = replicas, address, interval
        self.started = time.time()
        self._last: tuple[float, int, dict[str, int]] | None = None

    def build(self, reports: dict[str, dict[str, Any]], draining: bool = False) -> tuple[dict, dict]:
        """(status document, models summary) from ``{replica: {"received", "status"}}``."""
        now = time.time()
        zero = {"requests": 0, "errors": 0, "rejected": 0}
        models: dict[str, dict[str, Any]] = {}
        served: dict[str, set[str]] = {}
        total = dict(zero)  # every request any replica answered (server routes too), since the start
        replicas = []
        for rid, rep in sorted(reports.items()):
            st = rep["status"]
            fresh = now - rep["received"] < FRESH_S
            if now - rep["received"] < GONE_S:
                replicas.append(
                    {
                        "replica": rid,
                        "node_id": st.get("node_id"),
                        "host": st.get("host"),
                        "pid": st.get("pid"),
                        "ready": bool(st.get("ready")) and fresh,
                        "requests": st.get("requests", 0),
                        "models": st.get("served") or {},
                        "document": st.get("document"),
                        "reported": rep["received"],
                    }
                )
            for name, m in (st.get("models") or {}).items():
                t = models.setdefault(name, {**zero, "swap_failure": None, "load_failure": None, "llm": None})
                for k in zero:
                    t[k] += m.get(k, 0)
                if fresh:  # a failure of a replica that is gone is nobody's problem now
                    t["swap_failure"] = t["swap_failure"] or m.get("swap_failure")
                    t["load_failure"] = t["load_failure"] or m.get("load_failure")
            for k in zero:
                total[k] += st.get(k, 0)
            if fresh:
                for name, versions in (st.get("served") or {}).items():
                    served.setdefault(name, set()).update(versions)
        prev = self._last
        rate = lambda a, b: round((a - b) / max(now - prev[0], 1e-3), 2) if prev else None
        for name, m in models.items():
            m["requests_per_s"] = rate(m["requests"], prev[2].get(name, 0)) if prev else None
        self._last = (now, total["requests"], {n: m["requests"] for n, m in models.items()})
        ready = sum(r["ready"] for r in replicas)
        doc = {
            "time": now,
            "interval_s": self.interval,
            "pid": os.getpid(),
            "started": self.started,
            "ready": ready >= self.replicas and not draining,
            **total,
            "requests_per_s": rate(total["requests"], prev[1]) if prev else None,
            "models": dict(sorted(models.items())),
            "llm": None,
            "kind": KIND,
            "cluster": self.address,
            "replicas": {"wanted": self.replicas, "ready": ready, "each": replicas},
        }
        order = lambda v: (not v.isdecimal(), int(v) if v.isdecimal() else 0, v)
        return doc, {n: sorted(v, key=order) for n, v in sorted(served.items())}


# -- the process --------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m aios_lab.cluster.serve_driver", description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, required=True)
    p.add_argument("--cpus-per-replica", type=float, default=1.0)
    for args, kwargs in cli_arguments():
        p.add_argument(*args, **kwargs)
    return p


def main(argv: list[str] | None = None) -> int:
    config.private_umask()
    args = parser().parse_args(argv)
    s = ServeSettings.from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t = targetlib.require()
    bind, url = serve_url(s, t)
    row = Row(url, bind, s.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    status = Status(args.replicas, t.address, s.status_interval_s or 2.0)
    row.write("starting", {}, None)
    try:
        _run(args, s, t, bind, row, status, stop)
    except Exception as exc:
        why = str(exc) if isinstance(exc, AiosError) else f"{type(exc).__name__}: {exc}"
        log.error("the Ray Serve deployment failed: %s", why.splitlines()[0] if why else why)
        row.write("stopped", {}, {"kind": KIND, "error": why.splitlines()[0] if why else "failed", "time": time.time()})
        return 1
    return 0


def _run(args, s: ServeSettings, t, bind: str, row: Row, status: Status, stop: threading.Event) -> None:
    from .session import ray_session

    doc = document(s.models)
    with ray_session(t, log_to_driver=False) as ray:
        from ray import serve

        for sig in (signal.SIGTERM, signal.SIGINT):  # Ray's own handler would end the process mid-delete
            signal.signal(sig, lambda *_: stop.set())

        from .serve_replica import Hub, V2Replica

        http = {"host": bind, "port": s.port}
        if s.tls_cert:  # HTTPS at the proxy (the files must be readable on the head node)
            http.update(ssl_certfile=s.tls_cert, ssl_keyfile=s.tls_key)
        serve.start(proxy_location="HeadOnly", http_options=http)
        with contextlib.suppress(AttributeError):  # Serve's HTTP options are cluster-wide and fixed once it runs
            have = serve.context._get_global_client().http_config
            if int(have.port) != s.port:
                raise InvalidInput(
                    f"Ray Serve already runs on this cluster with its HTTP proxy on port {have.port}; "
                    f"use --port {have.port}, or stop the other Serve applications first"
                )
        deployment = V2Replica.options(
            name=DEPLOYMENT,
            num_replicas=args.replicas,
            ray_actor_options={"num_cpus": args.cpus_per_replica},
            max_constructor_retry_count=CONSTRUCTOR_RETRIES,
            graceful_shutdown_timeout_s=s.drain_timeout_s,
            # Serve's default of 5 requests in flight per replica would starve the batcher; the app's own
            # back-pressure (429 past max_queue_rows) guards the replica instead.
            max_ongoing_requests=max(16, 2 * s.max_batch_size),
            # A log line per request costs more than a small forward pass; /metrics counts them instead.
            logging_config={"enable_access_log": False, "log_level": "WARNING"},
        )
        with contextlib.suppress(ValueError):  # the hub of a driver that was killed
            ray.kill(ray.get_actor(hub_name(s.port), namespace=NAMESPACE))
        # Detached: a replica that Serve restarts after the driver is gone still finds its document.
        hub = Hub.options(name=hub_name(s.port), namespace=NAMESPACE, lifetime="detached").remote(doc)

        def publish(state: str, draining: bool = False) -> None:
            try:
                st, served = status.build(ray.get(hub.collect.remote(), timeout=10), draining=draining)
            except Exception as exc:  # a slow hub: the row catches up next time
                log.warning("status update failed: %s", exc)
                return
            row.write(state, served, st)

        try:
            try:
                serve.run(
                    deployment.bind(dataclasses.asdict(s), hub_name(s.port), NAMESPACE),
                    name=app_name(s.port),
                    route_prefix="/",
                )
            except RuntimeError as exc:
                raise AiosError(f"{exc}: {_replica_error(serve, app_name(s.port))}") from None
            _wait_reports(ray, hub, args.replicas, stop)
            publish("running")
            row.audit("serve.start", replicas=args.replicas, cluster=t.address, models=sorted(doc["models"]))
            log.info("serving on %s with %d replicas", row.url, args.replicas)
            _follow(s, doc, lambda d: ray.get(hub.post.remote(d)), row, stop, publish)
            publish("draining", draining=True)
        finally:
            log.info("stopping: deleting the Serve application %s", app_name(s.port))
            serve.delete(app_name(s.port))
            ray.kill(hub)
            if not serve.status().applications:
                serve.shutdown()
    row.write("stopped", {}, {"kind": KIND, "ready": False, "time": time.time()})
    row.audit("serve.stop")


def _replica_error(serve, app: str) -> str:
    """The last line of why Serve could not start a replica (its exception), or what Serve says."""
    try:
        d = serve.status().applications[app].deployments[DEPLOYMENT]
    except (KeyError, AttributeError):
        return "no details from Serve"
    lines = [line.strip() for line in (d.message or "").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0]]
    return (errors or lines or ["no details from Serve"])[-1]


def _wait_reports(ray, hub, replicas: int, stop: threading.Event, timeout: float = 60.0) -> None:
    """Until every replica has reported once (about a second after Serve says the app runs)."""
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        if len(ray.get(hub.collect.remote())) >= replicas:
            return
        stop.wait(0.2)


def _follow(s: ServeSettings, doc: dict, post, row: Row, stop: threading.Event, publish) -> None:
    """Until ``stop``: post a new document when the registry or the tokens changed; publish the status."""
    next_poll = next_status = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if s.poll_interval_s and now >= next_poll:
            next_poll = now + s.poll_interval_s
            try:
                new = document(s.models)
            except Exception as exc:  # the catalog may be mid-write: try again next time
                log.warning("reading the registry failed: %s", exc)
                new = doc
            if new != doc:
                seq = post(new)
                changed = sorted(n for n in new["models"] if new["models"][n] != doc["models"].get(n))
                log.info("posted serve document %d (models changed: %s)", seq, changed)
                if changed:
                    row.audit("serve.follow", models=changed)
                doc = new
        if now >= next_status:
            next_status = now + (s.status_interval_s or 2.0)
            publish("running")
        stop.wait(0.2)


if __name__ == "__main__":
    sys.exit(main())
