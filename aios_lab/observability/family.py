"""A gauge family declared once: the empty family ``describe()`` lists and the one ``collect()`` fills."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily


@dataclass(frozen=True)
class Gauge:
    """A gauge's name, help, label names and unit (the name ends with the unit, as Prometheus asks)."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    unit: str = ""

    def family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.help, labels=self.labels, unit=self.unit)


def number(value: object) -> float | None:
    """``value`` as a float when it is a number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
