"""Prometheus metrics of one server: requests by model, version and status, latency, batch sizes, queue depth,
requests refused by back-pressure, and the per-model totals the endpoint's catalog row reports.

Each app gets its own ``CollectorRegistry`` so several servers can live in one process (tests).
Label children are cached so that counting a request costs a dict lookup and two increments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
UNCOUNTED = ("health", "metrics", "openapi")  # probes and scrapes: not traffic


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "aios_serve_requests",
            "HTTP requests by route, model, version and status",
            ["route", "model", "version", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "aios_serve_request_seconds",
            "Time from request start to response, by route and model",
            ["route", "model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "aios_serve_batch_size",
            "Rows per forward pass",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "aios_serve_queue_depth", "Requests waiting for a batch", ["model", "version"], registry=self.registry
        )
        self.loaded = Gauge(
            "aios_serve_model_loaded", "1 for each loaded model version", ["model", "version"], registry=self.registry
        )
        self.queue_rows = Gauge(
            "aios_serve_queue_rows",
            "Rows waiting for or in a forward pass (past --max-queue-rows new requests get 429)",
            ["model", "version"],
            registry=self.registry,
        )
        self.parsing = Gauge(
            "aios_serve_requests_parsing",
            "Requests whose body is in and being parsed (a body still arriving is not counted)",
            ["model", "version"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "aios_serve_rejected",
            "Requests refused by back-pressure (429 with Retry-After), by model and reason",
            ["model", "reason"],
            registry=self.registry,
        )
        self.offloaded = Counter(
            "aios_serve_offloaded",
            "Large JSON bodies parsed (what=parse) and responses encoded (what=encode) in the helper process",
            ["what"],
            registry=self.registry,
        )
        self._children: dict[tuple, tuple] = {}

    def observe(self, route: str, model: str, version: str, status: int, seconds: float) -> None:
        key = (route, model, version, status)
        pair = self._children.get(key)
        if pair is None:
            pair = (self.requests.labels(route, model, version, str(status)), self.latency.labels(route, model))
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def reject(self, model: str, reason: str) -> None:
        self.rejected.labels(model, reason).inc()

    def totals(self) -> dict[str, dict[str, int]]:
        """model ('' for server routes) -> requests, errors (status >= 400) and rejected, read from the
        counters (probes and scrapes left out): what the endpoint's catalog row reports."""
        out: dict[str, dict[str, int]] = {}
        for family in self.requests.collect():
            for s in family.samples:
                if not s.name.endswith("_total") or s.labels["route"] in UNCOUNTED:
                    continue
                t = out.setdefault(s.labels["model"], {"requests": 0, "errors": 0, "rejected": 0})
                t["requests"] += int(s.value)
                t["errors"] += int(s.value) if int(s.labels["status"]) >= 400 else 0
        for family in self.rejected.collect():
            for s in family.samples:
                if s.name.endswith("_total"):
                    t = out.setdefault(s.labels["model"], {"requests": 0, "errors": 0, "rejected": 0})
                    t["rejected"] += int(s.value)
        return out

    def batch_observer(self, model: str, version: str) -> Callable[[int], None]:
        return self.batch_size.labels(model, version).observe

    def track_version(self, model: str, version: str, batcher: Any) -> None:
        """Gauges read from a loaded version's batcher (queue depth, pending rows, bodies being parsed)."""
        self.queue_depth.labels(model, version).set_function(batcher.depth)
        self.queue_rows.labels(model, version).set_function(batcher.pending_rows)
        self.parsing.labels(model, version).set_function(batcher.parsing)
        self.loaded.labels(model, version).set(1)

    def untrack_version(self, model: str, version: str) -> None:
        for g in (self.queue_depth, self.queue_rows, self.parsing, self.loaded):
            try:
                g.remove(model, version)
            except KeyError:
                pass

    def render(self) -> bytes:
        return generate_latest(self.registry)
