"""The queue keeper: one per AIOS_HOME, it moves the queue and notices dead jobs with nobody watching."""

import json
import os
import subprocess
import sys
import time

import pytest

from aios_lab.catalog import catalog
from aios_lab.jobs import keeper

KEEPER = [sys.executable, "-c", "from aios_lab.jobs.keeper import main; main()"]


def wait_for(cond, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def state(name):
    r = catalog().one("SELECT state FROM jobs WHERE name=?", (name,))
    return r[0] if r else None


@pytest.fixture
def stand_in():
    """A live process that passes for a job's supervisor (its command line names aios_lab.jobs)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "aios_lab.jobs"])
    yield proc
    proc.kill()
    proc.wait()


def _running_row(name, supervisor_pid):
    now = time.time()
    config = {"dataset": "d", "model": "mlp", "task": "classification", "train": {"batch": 8}, "max_retries": 0}
    with catalog().tx() as db:
        db.execute(
            "INSERT INTO jobs (name, state, config, priority, n_devices, devices, steps, supervisor_pid, created, "
            "updated) VALUES (?, 'running', ?, 0, 1, '[0]', 10, ?, ?, ?)",
            (name, json.dumps(config), supervisor_pid, now, now),
        )


def test_two_keepers_racing_leave_one_which_reaps_a_dead_job_and_exits_when_idle(stand_in):
    assert not keeper.ensure(), "nothing queued or running: no keeper"
    _running_row("held", stand_in.pid)
    racers = [subprocess.Popen(KEEPER, env=dict(os.environ)) for _ in range(2)]
    wait_for(lambda: sum(p.poll() is not None for p in racers) == 1, 60, "one keeper to give way")
    loser = next(p for p in racers if p.poll() is not None)
    winner = next(p for p in racers if p.poll() is None)
    assert loser.returncode == 0 and keeper.alive()
    assert not keeper.ensure(), "a keeper runs: none is started"
    stand_in.kill()  # the job's last process dies; no reader, no writer
    wait_for(lambda: state("held") == "interrupted", 60, "the keeper to notice the dead job")
    assert winner.wait(timeout=60) == 0, "with nothing queued or running the keeper exits"
    assert not keeper.alive()
