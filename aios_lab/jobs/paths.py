"""Where a job keeps its files: ``AIOS_HOME/jobs/NAME/`` with checkpoints, variants and its log."""

import os
import shutil
import uuid
from pathlib import Path

from .. import config
from ..errors import AiosError
from ..names import check_name


def job_dir(name: str) -> Path:
    return config.named("jobs", name)


def job_entry(name: str) -> Path:
    """``AIOS_HOME/jobs/NAME`` as it stands, not resolved (it may be a leftover, or a link out: never followed)."""
    return config.area("jobs") / check_name(name, "job")


def checkpoint_dir(name: str) -> Path:
    return job_dir(name) / "checkpoints"


def checkpoints_of(name: str, job_config: dict) -> str | Path:
    """Where a job's checkpoints are: its own folder, or the path or URI a cluster job was given."""
    return job_config.get("checkpoint_dir") or checkpoint_dir(name)


def log_path(name: str) -> Path:
    return job_dir(name) / "worker.log"


def disk_bytes(name: str) -> int:
    """Bytes the job's folder holds on disk (checkpoints, variants, log); 0 before it has one."""
    try:
        total, todo = 0, [job_dir(name)]
    except AiosError:  # its folder is a link out of AIOS_HOME: nothing of ours to count
        return 0
    while todo:
        try:
            entries = list(os.scandir(todo.pop()))
        except OSError:  # not there (yet), or removed while we walk it
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    todo.append(entry.path)
                else:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total


def remove_job_dir(name: str) -> None:
    """Delete the job's folder: renamed aside first (one atomic step), so its name is free at once.

    A symbolic link in its place is removed, never followed.
    """
    folder = job_entry(name)
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
        return
    if not folder.exists():
        return
    os.rename(folder, config.area("jobs", f"_deleted-{name}-{uuid.uuid4().hex[:8]}"))
    for aside in config.area("jobs").glob("_deleted-*"):  # this one, and any a crash left half-removed
        shutil.rmtree(aside, ignore_errors=True)
