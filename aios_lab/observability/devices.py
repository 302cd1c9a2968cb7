"""The machine's devices and the queue waiting for them, as ``aios.devices()`` reports them, at scrape time.

Memory and utilisation come from NVML on NVIDIA GPUs; elsewhere those families are declared but hold no
samples, and which job holds which device (``aios_device_busy``, ``aios_device_allocated``) is what there is.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily

from ..jobs.api import devices as report
from .family import Gauge, number

DEVICE = ("device", "kind")

INFO = Gauge("aios_device_info", "1 for every device jobs can use", ("device", "kind", "name"))
BUSY = Gauge("aios_device_busy", "1 while a running job holds the device, else 0", DEVICE)
ALLOCATED = Gauge("aios_device_allocated", "1 for the job that holds the device", ("device", "kind", "job_name"))
MEMORY_USED = Gauge("aios_device_memory_used_bytes", "Device memory in use (NVML)", DEVICE, "bytes")
MEMORY_TOTAL = Gauge("aios_device_memory_total_bytes", "Device memory in all (NVML)", DEVICE, "bytes")
UTILIZATION = Gauge(
    "aios_device_utilization_ratio", "Fraction of the last sample period the device was busy (NVML)", DEVICE, "ratio"
)
QUEUE = Gauge("aios_queue_length", "Jobs waiting for devices")
QUEUE_DEVICES = Gauge("aios_queue_devices_requested", "Devices the waiting jobs ask for, together")
POSITION = Gauge(
    "aios_job_queue_position", "A waiting job's place in the start order (0 starts next)", ("job_name", "priority")
)

GAUGES = (INFO, BUSY, ALLOCATED, MEMORY_USED, MEMORY_TOTAL, UTILIZATION, QUEUE, QUEUE_DEVICES, POSITION)
NVML = ((MEMORY_USED, "memory_used", 1.0), (MEMORY_TOTAL, "memory_total", 1.0), (UTILIZATION, "utilization", 0.01))


class DeviceCollector:
    """Every device (with the job holding it and, on NVIDIA GPUs, memory and utilisation) and the queue."""

    def describe(self) -> list[GaugeMetricFamily]:
        return [g.family() for g in GAUGES]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        out = {g: g.family() for g in GAUGES}
        found = report()
        for d in found["devices"]:
            ids = [str(d["id"]), d["kind"]]
            out[INFO].add_metric([*ids, d["name"]], 1)
            out[BUSY].add_metric(ids, 0 if d["job"] is None else 1)
            if d["job"] is not None:
                out[ALLOCATED].add_metric([*ids, d["job"]], 1)
            for gauge, key, scale in NVML:
                if (v := number(d.get(key))) is not None:
                    out[gauge].add_metric(ids, v * scale)
        queue = found["queue"]
        out[QUEUE].add_metric([], len(queue))
        out[QUEUE_DEVICES].add_metric([], sum(q["n_devices"] for q in queue))
        for place, q in enumerate(queue):
            out[POSITION].add_metric([q["name"], str(q["priority"])], place)
        yield from out.values()
