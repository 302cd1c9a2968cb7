"""Training jobs as Prometheus gauges, read from the catalog at scrape time (a read: nothing is started).

Every series of a job carries ``job_name``, not ``job``: Prometheus gives each scraped series a ``job``
label of its own (the scrape job), and a clash would rename ours to ``exported_job``.
"""

from __future__ import annotations

from collections.abc import Iterator

import psutil
from prometheus_client.core import GaugeMetricFamily

from .. import metric_names as mn
from ..jobs import records
from ..jobs.job import latest_metrics, to_json
from .family import Gauge, number

JOB = ("job_name",)

INFO = Gauge(
    "aios_job_info",
    "1 for every job, with what it trains on",
    ("job_name", "dataset", "model", "task", "device_kind"),
)
STATE = Gauge("aios_job_state", "1 for the job's current state, 0 for the others", ("job_name", "state"))
STEP = Gauge("aios_job_step", "Training steps done", JOB)
TARGET = Gauge("aios_job_target_steps", "Training steps the job runs to (its --steps)", JOB)
LOSS = Gauge("aios_job_loss", "Training loss of the newest train row", JOB)
EXAMPLES = Gauge("aios_job_examples_per_second", "Training examples per second of the newest train row", JOB)
STEP_TIME = Gauge("aios_job_step_seconds", "Seconds per training step of the newest train row", JOB, "seconds")
INPUT_WAIT = Gauge(
    "aios_job_input_wait_ratio", "Fraction of the step time spent waiting for the next batch", JOB, "ratio"
)
EVAL = Gauge(
    "aios_job_eval",
    "The newest evaluation of each split, one series per metric (loss, accuracy, perplexity, mse)",
    ("job_name", "split", "metric"),
)
EVAL_STEP = Gauge(
    "aios_job_eval_step", "The training step of the newest evaluation of each split", ("job_name", "split")
)
DEVICES = Gauge("aios_job_devices", "Devices the job holds while it runs, or asks for while it waits", JOB)
PRIORITY = Gauge("aios_job_priority", "The job's queue priority (higher starts first)", JOB)
ATTEMPTS = Gauge("aios_job_attempts", "Times the job was restarted after its worker was lost", JOB)
ETA = Gauge("aios_job_eta_seconds", "Seconds until a running job reaches its target steps, at its current rate", JOB)
STATE_BYTES = Gauge("aios_job_state_bytes_per_device", "Bytes of training state (params, optimizer) per device", JOB)
RESIDENT = Gauge("aios_job_resident_memory_bytes", "Resident memory of a running job's worker process", JOB, "bytes")
CREATED = Gauge("aios_job_created_timestamp_seconds", "When the job was submitted (unix time)", JOB, "seconds")
STARTED = Gauge("aios_job_started_timestamp_seconds", "When the job last started running (unix time)", JOB, "seconds")
ENDED = Gauge("aios_job_ended_timestamp_seconds", "When the job ended (unix time)", JOB, "seconds")
REPORTED = Gauge(
    "aios_job_last_report_timestamp_seconds", "When the job wrote its newest train row (unix time)", JOB, "seconds"
)
COUNT = Gauge("aios_jobs", "Jobs in each state", ("state",))

PER_JOB = (INFO, STATE, STEP, TARGET, LOSS, EXAMPLES, STEP_TIME, INPUT_WAIT, EVAL, EVAL_STEP, DEVICES, PRIORITY)
PER_JOB += (ATTEMPTS, ETA, STATE_BYTES, RESIDENT, CREATED, STARTED, ENDED, REPORTED)
GAUGES = (*PER_JOB, COUNT)
TRAIN_VALUES = ((LOSS, mn.LOSS), (EXAMPLES, mn.EXAMPLES_PER_S), (STEP_TIME, mn.STEP_TIME), (INPUT_WAIT, mn.INPUT_WAIT))


class JobCollector:
    """Every job in the catalog: state, progress, the newest train row and evaluations, timestamps."""

    def describe(self) -> list[GaugeMetricFamily]:
        return [g.family() for g in GAUGES]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        out = {g: g.family() for g in GAUGES}
        counts = dict.fromkeys(records.STATES, 0)
        for row in records.rows():
            info = to_json(row, latest_metrics(row["name"]))
            counts[info["state"]] = counts.get(info["state"], 0) + 1
            add_job(out, info, row)
        for state, n in counts.items():
            out[COUNT].add_metric([state], n)
        yield from out.values()


def add_job(out: dict[Gauge, GaugeMetricFamily], info: dict, row: dict) -> None:
    """The samples of one job (its JSON model, ``Job.to_json()``'s shape) into the families of ``out``."""
    name = info["name"]

    def put(gauge: Gauge, value: object, *labels: str) -> None:
        if (v := number(value)) is not None:
            out[gauge].add_metric([name, *labels], v)

    labels = (info.get("dataset"), info.get("model"), info.get("task"), info.get("device_kind"))
    out[INFO].add_metric([name, *("" if v is None else str(v) for v in labels)], 1)
    for state in records.STATES:
        out[STATE].add_metric([name, state], 1 if info["state"] == state else 0)
    put(STEP, info["step"])
    put(TARGET, info["steps"])
    train = info["metrics"].get("train", {})
    for gauge, key in TRAIN_VALUES:
        put(gauge, train.get(key))
    put(REPORTED, train.get(mn.TIME))
    for split, values in sorted(info["metrics"].items()):
        if split == "train":
            continue
        put(EVAL_STEP, values.get(mn.STEP), split)
        for metric, value in values.items():
            if metric not in (mn.STEP, mn.TIME, mn.SPLIT):
                put(EVAL, value, split, metric)
    put(DEVICES, len(info["devices"]) if info["state"] == "running" else info["n_devices"])
    put(PRIORITY, info["priority"])
    put(ATTEMPTS, info["attempts"])
    put(ETA, info["eta_s"])
    put(STATE_BYTES, info["state_bytes_per_device"])
    put(CREATED, info["created"])
    put(STARTED, info["started"])
    put(ENDED, info["ended"])
    if info["state"] == "running":
        put(RESIDENT, resident_bytes(row["pid"]))


def resident_bytes(pid: int | None) -> int | None:
    """The resident memory of a job's worker, or None when it is gone (or not a job's process)."""
    if not records.alive(pid):
        return None
    try:
        return psutil.Process(pid).memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
