"""The training dashboard: jobs, the queue and the devices, from ``/aios/api/metrics`` or ``aios metrics serve``."""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge
from grafana_foundation_sdk.builders.common import ReduceDataOptions
from grafana_foundation_sdk.builders.dashboard import Dashboard, Row

from .panels import DS, INST, big, dashboard, label_variable, labels_table, merged_table, q, series

JOBS = f'{INST}, job_name=~"$job_name"'


def training() -> Dashboard:
    """Jobs, the queue and the devices, from ``/aios/api/metrics`` or ``aios metrics serve``."""
    d = dashboard(
        "aios-training",
        "aios: training jobs, queue and devices",
        "Training jobs, the queue and the devices of one machine, scraped from the Jupyter route /aios/api/metrics "
        "or from `aios metrics serve`.",
        ["training"],
    )
    d = d.with_variable(label_variable("instance", "instance", "aios_queue_length", "Machine"))
    d = d.with_variable(label_variable("job_name", "job_name", f"aios_job_info{{{INST}}}", "Job"))
    d = d.with_row(Row("Queue and devices"))
    for panel in (
        big("Running jobs", "Jobs training now", [q(f'aios_jobs{{{INST}, state="running"}}', "running")]),
        big("Queued jobs", "Jobs waiting for devices", [q(f"sum(aios_queue_length{{{INST}}})", "queued")]),
        big(
            "Devices busy",
            "Devices a running job holds, of all devices",
            [q(f"sum(aios_device_busy{{{INST}}})", "busy"), q(f"count(aios_device_info{{{INST}}})", "devices")],
        ),
        big(
            "Devices wanted by the queue",
            "Devices the waiting jobs ask for together",
            [q(f"sum(aios_queue_devices_requested{{{INST}}})", "wanted")],
        ),
        big(
            "Failed jobs",
            "Jobs that ended in failure",
            [q(f'sum(aios_jobs{{{INST}, state="failed"}})', "failed")],
            red_at=1,
        ),
        big(
            "Interrupted jobs",
            "Jobs whose worker was lost",
            [q(f'sum(aios_jobs{{{INST}, state="interrupted"}})', "interrupted")],
        ),
        series(
            "Jobs by state",
            "How many jobs are in each state",
            [q(f"sum by (state) (aios_jobs{{{INST}}})", "{{state}}")],
            stack=True,
        ),
        series(
            "Devices held, by job",
            "Which job holds how many devices (on a CPU machine: the XLA host devices)",
            [q(f"sum by (job_name) (aios_device_allocated{{{INST}}})", "{{job_name}}")],
            stack=True,
            min_val=0,
        ),
        series(
            "Waiting jobs by priority",
            "Queued jobs, by priority (higher starts first)",
            [q(f"count by (priority) (aios_job_queue_position{{{INST}}})", "priority {{priority}}")],
            stack=True,
            min_val=0,
        ),
        series(
            "Device utilisation (NVML)",
            "Fraction of time each GPU was busy; empty on machines without NVIDIA GPUs",
            [q(f"aios_device_utilization_ratio{{{INST}}}", "{{instance}} {{kind}} {{device}}")],
            "percentunit",
            min_val=0,
            max_val=1,
        ),
        series(
            "Device memory used (NVML)",
            "GPU memory in use, of its total; empty on machines without NVIDIA GPUs",
            [
                q(f"aios_device_memory_used_bytes{{{INST}}}", "{{instance}} {{kind}} {{device}} used"),
                q(f"aios_device_memory_total_bytes{{{INST}}}", "{{instance}} {{kind}} {{device}} total"),
            ],
            "bytes",
            min_val=0,
        ),
        labels_table(
            "Device holders",
            "Each device with the job that holds it now",
            f"aios_device_allocated{{{INST}}} == 1",
            ["instance", "device", "kind", "job_name"],
        ),
    ):
        d = d.with_panel(panel)
    d = d.with_row(Row("Jobs"))
    for panel in (
        bargauge.Panel()
        .title("Progress")
        .description("Steps done of the steps each job runs to")
        .datasource(DS)
        .unit("percentunit")
        .min(0)
        .max(1)
        .span(12)
        .height(8)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(
            q(f"aios_job_step{{{JOBS}}} / aios_job_target_steps{{{JOBS}}}", "{{job_name}}", instant=True).ref_id("A")
        ),
        merged_table(
            "Jobs",
            "Each job now: state, steps, devices held or asked for, priority, and restarts after a lost worker",
            ["job_name", "state"],
            [
                (None, f"aios_job_state{{{JOBS}}} == 1"),
                ("step", f"aios_job_step{{{JOBS}}}"),
                ("steps", f"aios_job_target_steps{{{JOBS}}}"),
                ("devices", f"aios_job_devices{{{JOBS}}}"),
                ("priority", f"aios_job_priority{{{JOBS}}}"),
                ("restarts", f"aios_job_attempts{{{JOBS}}}"),
            ],
        ),
        series("Training loss", "Loss of the newest train row", [q(f"aios_job_loss{{{JOBS}}}", "{{job_name}}")]),
        series(
            "Evaluation loss",
            "Loss of the newest evaluation, per split",
            [q(f'aios_job_eval{{{JOBS}, metric="loss"}}', "{{job_name}} {{split}}")],
        ),
        series(
            "Evaluation accuracy",
            "Accuracy of the newest evaluation, per split (next-token accuracy for language models)",
            [q(f'aios_job_eval{{{JOBS}, metric="accuracy"}}', "{{job_name}} {{split}}")],
            "percentunit",
        ),
        series(
            "Other evaluation metrics",
            "Perplexity (language models), mse (regression) and any other metric an evaluation reports",
            [q(f'aios_job_eval{{{JOBS}, metric!~"loss|accuracy"}}', "{{job_name}} {{split}} {{metric}}")],
        ),
        series(
            "Examples per second",
            "Training throughput of the newest train row",
            [q(f"aios_job_examples_per_second{{{JOBS}}}", "{{job_name}}")],
        ),
        series(
            "Step time",
            "Seconds per training step",
            [q(f"aios_job_step_seconds{{{JOBS}}}", "{{job_name}}")],
            "s",
        ),
        series(
            "Input wait",
            "Fraction of the step time spent waiting for data (high: the loader starves the devices)",
            [q(f"aios_job_input_wait_ratio{{{JOBS}}}", "{{job_name}}")],
            "percentunit",
            min_val=0,
        ),
        series(
            "Memory",
            "Training state per device, as the worker measured it, and the worker process's resident memory",
            [
                q(f"aios_job_state_bytes_per_device{{{JOBS}}}", "{{job_name}} state per device"),
                q(f"aios_job_resident_memory_bytes{{{JOBS}}}", "{{job_name}} worker resident"),
            ],
            "bytes",
        ),
        series(
            "Time left",
            "Seconds until a running job reaches its target steps, at its current rate",
            [q(f"aios_job_eta_seconds{{{JOBS}}}", "{{job_name}}")],
            "s",
        ),
        series(
            "Time since the last report",
            "Seconds since each running job wrote a train row (a stuck job climbs)",
            [
                q(
                    f"(time() - aios_job_last_report_timestamp_seconds{{{JOBS}}}) and on (job_name) "
                    f'(aios_job_state{{{INST}, state="running"}} == 1)',
                    "{{job_name}}",
                )
            ],
            "s",
        ),
    ):
        d = d.with_panel(panel)
    return d
