"""Prometheus metrics of training jobs, devices and the queue, read from the catalog when scraped.

Two faces serve the same registry: the Jupyter server extension's authenticated ``GET /aios/api/metrics``
and ``aios metrics serve`` (a small HTTP server on 127.0.0.1 for a Prometheus server to scrape). A scrape
only reads: it never schedules, writes a catalog row or starts a process. Names (all gauges):

    aios_job_info{job_name,dataset,model,task,device_kind}   aios_job_state{job_name,state}
    aios_job_step, aios_job_target_steps, aios_job_loss, aios_job_examples_per_second, aios_job_step_seconds,
    aios_job_input_wait_ratio, aios_job_eval{job_name,split,metric}, aios_job_eval_step{job_name,split},
    aios_job_devices, aios_job_priority, aios_job_attempts, aios_job_eta_seconds, aios_job_state_bytes_per_device,
    aios_job_resident_memory_bytes, aios_job_{created,started,ended,last_report}_timestamp_seconds   {job_name}
    aios_jobs{state}   aios_queue_length   aios_queue_devices_requested   aios_job_queue_position{job_name,priority}
    aios_device_info{device,kind,name}   aios_device_busy{device,kind}   aios_device_allocated{device,kind,job_name}
    aios_device_memory_used_bytes, aios_device_memory_total_bytes, aios_device_utilization_ratio{device,kind} (NVML)

>>> from aios_lab import observability
>>> text, content_type = observability.render()
"""

from .detached import MetricsServer, servers, start, stop
from .exposition import registry, render
from .server import DEFAULT_HOST, DEFAULT_PORT, run

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "MetricsServer",
    "registry",
    "render",
    "run",
    "servers",
    "start",
    "stop",
]
