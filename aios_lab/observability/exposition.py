"""One registry of the catalog's collectors per process, and its text in the format the scraper asks for."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from .devices import DeviceCollector
from .jobs import JobCollector

_registry: CollectorRegistry | None = None
_lock = threading.Lock()


def registry() -> CollectorRegistry:
    """The registry of jobs, devices and the queue; each scrape reads the catalog of the current AIOS_HOME."""
    global _registry
    with _lock:
        if _registry is None:
            reg = CollectorRegistry(auto_describe=False)
            reg.register(JobCollector())
            reg.register(DeviceCollector())
            _registry = reg
        return _registry


def render(accept: str | None = None) -> tuple[bytes, str]:
    """The metrics now, and their content type: OpenMetrics when ``accept`` asks for it, else Prometheus text."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry()), content_type
