"""One job over two worker processes of 4 host devices each under jax.distributed (gloo on the CPU)."""

import signal
import time

import numpy as np
import psutil

import aios_lab as aios
from aios_lab.catalog import catalog
from aios_lab.jobs.agreed_stop import EVERY


def test_two_processes_of_4_devices_follow_the_same_curve_as_one_process_of_8():
    aios.dataset("digits", "sklearn:digits")
    kw = dict(model="mlp", batch=64, steps=60, checkpoint_every=20, eval_every=20, lr=3e-3, devices=8)
    one = aios.train("one", dataset="digits", **kw)
    assert one.wait(timeout=300) == "succeeded", one.log_tail()
    two = aios.train("two", dataset="digits", processes=2, **kw)
    assert two.wait(timeout=300) == "succeeded", two.log_tail()
    log = two.log_tail(400)
    assert "worker 0/2" in log and "worker 1/2" in log, "two worker processes ran"
    evals = lambda job: {r["step"]: r for r in job.metrics() if r.get("split") == "val"}
    a, b = evals(one), evals(two)
    assert sorted(a) == sorted(b) == [20, 40, 60]
    for step in a:
        assert np.isclose(a[step]["loss"], b[step]["loss"], rtol=1e-3), (step, a[step], b[step])
        assert abs(a[step]["accuracy"] - b[step]["accuracy"]) <= 1 / 179 + 1e-9
    pa, pb = one.params(), two.params()
    import jax

    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):  # only summation order differs
        assert np.linalg.norm(x - y) <= 1e-2 * np.linalg.norm(x)
    assert catalog().one("SELECT config FROM jobs WHERE name='two'")[0].count('"processes": 2') == 1


def test_a_signal_to_one_worker_stops_every_process_at_one_agreed_step():
    """Each process used to watch for a stop on its own: one stopped alone and the others waited in a collective
    for ever. Now process 0 decides every few steps, and every process stops (and checkpoints) at that step."""
    aios.dataset("digits", "sklearn:digits")
    long = dict(steps=1_000_000, checkpoint_every=1_000_000, eval_every=1_000_000)
    job = aios.train(
        "two", dataset="digits", model="mlp", batch=64, lr=3e-3, devices=8, processes=2, max_retries=0, **long
    )
    deadline = time.monotonic() + 300
    while job.step == 0 and not job.done and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = psutil.Process(job.refresh()["supervisor_pid"]).children()
    second = next(p for p in workers if p.cmdline()[-2:] == ["--process-id", "1"])
    second.send_signal(signal.SIGTERM)  # to the second process only
    assert job.wait(timeout=300) == "interrupted", job.log_tail()
    step = job.step
    assert 0 < step and step % EVERY == 0 and job.checkpoints() == [step], (step, job.checkpoints())
    assert job.error.startswith("stopped by signal to another worker")
    assert psutil.wait_procs(workers, timeout=60)[1] == [], "both processes exited"
