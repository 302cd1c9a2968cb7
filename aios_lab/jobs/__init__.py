"""Jobs: the scheduler (devices, queue, priorities), the detached worker, and the Job handle."""

from .api import devices, job, jobs, train
from .job import Job

__all__ = ["Job", "devices", "job", "jobs", "train"]
