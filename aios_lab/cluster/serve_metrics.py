"""``/metrics`` of a Ray Serve deployment: one exposition for the whole deployment, whichever replica answers.

Every replica sends its Prometheus text to the deployment's reporter actor about once a second and
gets the others' latest texts back; a scrape answers this replica's live series plus the others' last
reported ones, summed sample by sample (counters and histograms add up; gauges such as
``aios_serve_model_loaded`` count the replicas). A ``_created`` sample keeps the earliest time.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ..serve.metrics import Metrics


def merge(texts: Iterable[str]) -> bytes:
    """The sum of several Prometheus text expositions of the same metrics, as one exposition."""
    families: dict[str, object] = {}
    values: dict[str, dict[tuple, float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            if fam.name not in families:
                families[fam.name] = fam
                values[fam.name] = {}
            into = values[fam.name]
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                if key not in into:
                    into[key] = s.value
                elif s.name.endswith("_created"):
                    into[key] = min(into[key], s.value)
                else:
                    into[key] += s.value
    for name, fam in families.items():
        fam.samples = (
            [type(fam.samples[0])(n, dict(lb), v) for (n, lb), v in values[name].items()] if fam.samples else []
        )

    class Merged:
        def collect(self):
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Merged())
    return generate_latest(registry)


class ClusterMetrics(Metrics):
    """A replica's metrics whose exposition also holds the other replicas' last reported series."""

    def __init__(self) -> None:
        super().__init__()
        self.others: list[str] = []

    def own_text(self) -> str:
        return generate_latest(self.registry).decode()

    def render(self) -> bytes:
        if not self.others:
            return generate_latest(self.registry)
        return merge([self.own_text(), *self.others])
