"""Jobs: the queue policy, the scheduler and its keeper, the detached supervisor and worker, the Job handle."""

from .api import delete_job, devices, job, jobs, train
from .job import Job

__all__ = ["Job", "delete_job", "devices", "job", "jobs", "train"]
