"""Prometheus metrics of one server: requests by model, version and status, latency, batch sizes, queue depth.

Each app gets its own ``CollectorRegistry`` so several servers can live in one process (tests).
Label children are cached so that counting a request costs a dict lookup and two increments.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


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
        self._children: dict[tuple, tuple] = {}

    def observe(self, route: str, model: str, version: str, status: int, seconds: float) -> None:
        key = (route, model, version, status)
        pair = self._children.get(key)
        if pair is None:
            pair = (self.requests.labels(route, model, version, str(status)), self.latency.labels(route, model))
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def batch_observer(self, model: str, version: str) -> Callable[[int], None]:
        return self.batch_size.labels(model, version).observe

    def track_version(self, model: str, version: str, depth: Callable[[], int]) -> None:
        self.queue_depth.labels(model, version).set_function(depth)
        self.loaded.labels(model, version).set(1)

    def untrack_version(self, model: str, version: str) -> None:
        for g in (self.queue_depth, self.loaded):
            try:
                g.remove(model, version)
            except KeyError:
                pass

    def render(self) -> bytes:
        return generate_latest(self.registry)
