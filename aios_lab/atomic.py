"""Atomic publishing under AIOS_HOME: write a directory aside, seal it, rename it into place.

Dataset versions, compressed variants and registry versions are all written this way, so a reader
sees a whole version or none; a killed writer leaves only a folder in ``AIOS_HOME/tmp``, which the
next writer sweeps once that writer's process is gone. Published files are private (0600, or 0400
when read-only) in 0700 folders.

>>> with atomic.staged("dataset", "digits") as tmp:
...     write_everything(tmp)
...     atomic.seal(tmp, read_only=True)              # fsync + permissions, outside any catalog lock
...     with catalog().tx() as db:
...         atomic.publish(tmp, config.named("datasets", "digits", "v3"))
...         db.execute("INSERT ...")
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from . import config

READ_ONLY_FILE = 0o400


def _started(pid: int) -> int:
    """A process's start time in centiseconds: with the pid, it names a process even after pids wrap."""
    return int(psutil.Process(pid).create_time() * 100)


_owners: dict[int, str] = {}


def _owner() -> str:
    """``PID-START`` of this process (a forked child writes as itself)."""
    pid = os.getpid()
    if pid not in _owners:
        _owners[pid] = f"{pid}-{_started(pid)}"
    return _owners[pid]


def staging_root() -> Path:
    """``AIOS_HOME/tmp``: on the same file system as everything published, so renames are atomic."""
    return config.private_dir(config.area("tmp"))


@contextmanager
def staged(kind: str, name: str) -> Iterator[Path]:
    """A fresh, empty, private directory to write ``kind`` ``name`` into; gone afterwards unless published."""
    sweep()
    path = staging_root() / f"{kind}-{name}-{_owner()}-{uuid.uuid4().hex[:8]}"
    path.mkdir(mode=config.PRIVATE_DIR)
    try:
        yield path
    finally:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)


def seal(tmp: Path, read_only: bool = False) -> None:
    """Make everything under ``tmp`` private (files 0600, or 0400 if ``read_only``; folders 0700) and durable."""
    file_mode = READ_ONLY_FILE if read_only else config.PRIVATE_FILE
    for root, dirs, files in os.walk(tmp, topdown=False):
        for f in files:
            path = os.path.join(root, f)
            if os.path.islink(path):
                continue
            os.chmod(path, file_mode)
            _fsync(path)
        for d in dirs:
            if not os.path.islink(os.path.join(root, d)):
                os.chmod(os.path.join(root, d), config.PRIVATE_DIR)
        _fsync(root)
    os.chmod(tmp, config.PRIVATE_DIR)


def publish(tmp: Path, final: Path) -> None:
    """Rename the sealed ``tmp`` to ``final`` (its parents made 0700); whatever was at ``final`` is discarded.

    The caller decides that ``final`` may be replaced: a variant being redone, or a version folder that a
    crash left behind without its catalog row (the caller holds the transaction that makes it visible).
    """
    final = Path(final)
    parent = config.private_dir(final.parent)
    old = _aside(final) if final.exists() or final.is_symlink() else None
    os.rename(tmp, final)
    _fsync(parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def discard(path: Path) -> None:
    """Remove a published directory: renamed away first (readers never see half of it), then deleted."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        shutil.rmtree(_aside(path), ignore_errors=True)


def sweep() -> None:
    """Remove what writers that died mid-write left in ``AIOS_HOME/tmp`` (never anything of a live one)."""
    root = staging_root()
    for entry in root.iterdir():
        parts = entry.name.rsplit("-", 3)
        try:
            pid, started = int(parts[-3]), int(parts[-2])
        except (ValueError, IndexError):
            continue  # not ours
        if f"{pid}-{started}" != _owner() and not _running(pid, started):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _aside(path: Path) -> Path:
    """Move ``path`` into the staging area under a name the sweeper knows; returns where it went."""
    trash = staging_root() / f"trash-{path.name}-{_owner()}-{uuid.uuid4().hex[:8]}"
    os.rename(path, trash)
    return trash


def _running(pid: int, started: int) -> bool:
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and _started(pid) == started
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process in our AIOS_HOME: leave it be
        return True


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["staged", "seal", "publish", "discard", "sweep", "staging_root"]
