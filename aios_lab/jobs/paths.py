"""Where a job keeps its files: ``AIOS_HOME/jobs/NAME/`` with checkpoints, variants and its log."""

from pathlib import Path

from .. import config


def job_dir(name: str) -> Path:
    return config.named("jobs", name)


def checkpoint_dir(name: str) -> Path:
    return job_dir(name) / "checkpoints"


def log_path(name: str) -> Path:
    return job_dir(name) / "worker.log"
