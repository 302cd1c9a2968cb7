"""The queue policy as a pure function (no catalog, no process, no Ray), and reads that start nothing."""

import json
import time

import psutil

import aios_lab as aios
from aios_lab.catalog import catalog
from aios_lab.cluster.capacity import GangShape
from aios_lab.jobs import records
from aios_lab.jobs.policy import ClusterView, JobView, Plan, order, plan


def q(name, n, priority=0, created=0.0, **kw):
    return JobView(name, "queued", n, priority=priority, created=created, **kw)


def running(name, devices):
    return JobView(name, "running", len(devices), devices=tuple(devices))


def test_higher_priority_starts_first_even_when_it_came_later():
    p = plan([q("early", 4, created=1), q("urgent", 4, priority=5, created=2)], n_devices=4)
    assert p.start == (("urgent", (0, 1, 2, 3)),)


def test_equal_priority_starts_first_come_first_served():
    jobs = [q("c", 2, created=3), q("a", 2, created=1), q("b", 2, created=2)]
    assert [name for name, _ in plan(jobs, n_devices=4).start] == ["a", "b"]
    assert [j.name for j in order(jobs)] == ["a", "b", "c"]


def test_jobs_get_the_lowest_free_device_ids_and_never_a_busy_one():
    p = plan([running("r", [0, 2]), q("x", 3, created=1), q("y", 1, created=2)], n_devices=6)
    assert p.start == (("x", (1, 3, 4)), ("y", (5,)))


def test_a_job_starts_only_when_all_its_devices_are_free():
    assert not plan([running("r", range(6)), q("x", 4)], n_devices=8)
    assert plan([running("r", range(4)), q("x", 4)], n_devices=8).start == (("x", (4, 5, 6, 7)),)


def test_the_head_of_the_queue_blocks_smaller_jobs_behind_it():
    jobs = [running("r", range(4)), q("big", 8, created=1), q("small", 1, created=2)]
    assert plan(jobs, n_devices=8).start == ()


def test_a_job_bigger_than_the_machine_fails_instead_of_blocking_the_queue():
    p = plan([q("huge", 16, created=1), q("fits", 8, created=2)], n_devices=8)
    assert p.fail == (("huge", "needs 16 devices and this machine has 8"),)
    assert p.start == (("fits", tuple(range(8))),)


def test_an_interrupted_job_with_retries_left_is_requeued_in_its_old_place():
    lost = JobView("lost", "interrupted", 4, created=1, attempts=1, max_retries=2)
    p = plan([lost, q("later", 4, created=2)], n_devices=4)
    assert p.requeue == ("lost",) and p.start == (("lost", (0, 1, 2, 3)),)


def test_an_interrupted_job_without_retries_left_stays_put():
    spent = JobView("spent", "interrupted", 4, attempts=2, max_retries=2)
    assert plan([spent], n_devices=4) == Plan()


def test_a_job_cancelled_while_waiting_is_cancelled_and_never_started():
    p = plan(
        [
            q("gone", 2, created=1, cancel_requested=True),
            JobView("lost", "interrupted", 2, created=2, max_retries=2, cancel_requested=True),
            q("next", 2, created=3),
        ],
        n_devices=2,
    )
    assert p.cancel == ("gone", "lost") and p.requeue == ()
    assert p.start == (("next", (0, 1)),)


def test_finished_jobs_are_ignored_and_an_empty_plan_is_false():
    done = [JobView(s, s, 8) for s in ("succeeded", "failed", "cancelled")]
    assert not plan(done, n_devices=8)
    assert plan(done + [q("x", 8)], n_devices=8).start == (("x", tuple(range(8))),)


def _queued_row(name: str, n: int = 1) -> None:
    now = time.time()
    config = {"dataset": "d", "model": "mlp", "task": "classification", "train": {"batch": 8}, "max_retries": 2}
    with catalog().tx() as db:
        db.execute(
            "INSERT INTO jobs (name, state, config, priority, n_devices, steps, created, updated) "
            "VALUES (?, 'queued', ?, 0, ?, 10, ?, ?)",
            (name, json.dumps(config), n, now, now),
        )


def test_reading_jobs_starts_no_process_and_changes_nothing():
    """Seam 1: Job.state, aios.jobs(), aios.devices() and to_json used to run a scheduling pass."""
    _queued_row("waiting")
    before = catalog().one("SELECT * FROM jobs WHERE name='waiting'")
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    job = aios.job("waiting")
    assert job.state == "queued" and job.refresh()["state"] == "queued"
    assert [j.name for j in aios.jobs()] == ["waiting"]
    assert aios.devices()["queue"][0]["name"] == "waiting"
    info = job.to_json()
    assert info["state"] == "queued" and info["metrics"] == {} and info["disk_bytes"] == 0
    assert {p.pid for p in psutil.Process().children(recursive=True)} == children
    assert dict(catalog().one("SELECT * FROM jobs WHERE name='waiting'")) == dict(before)
    assert records.row("waiting")["pid"] is None


# -- cluster jobs: their own queue, admitted when the gang fits the cluster's free resources ------------


def _node(name, free_host=1.0):
    res = {"CPU": 2.0, "memory": 1e9, "aios_host": 1.0}
    return {"node_id": name, "alive": True, "resources": res, "available": {**res, "aios_host": free_host}}


def gang(name, hosts=2, priority=0, created=0.0, **kw):
    return JobView(name, "queued", hosts * 4, priority=priority, created=created, gang=GangShape(hosts, 4), **kw)


def running_gang(name, placement, hosts=2):
    return JobView(name, "running", hosts * 4, gang=GangShape(hosts, 4), placement=placement)


FREE = ClusterView((_node("a"), _node("b")))


def test_a_gang_starts_only_when_it_fits_the_clusters_free_resources():
    busy = ClusterView((_node("a"), _node("b", free_host=0.0)))
    assert plan([gang("g")], n_devices=8, cluster=busy) == Plan()
    assert plan([gang("g")], n_devices=8, cluster=FREE).start == (("g", ()),), "a gang holds no local device"
    assert plan([gang("one", hosts=1)], n_devices=8, cluster=busy).start == (("one", ()),)


def test_gangs_start_by_priority_then_first_come_and_the_head_blocks_those_behind():
    jobs = [gang("early", created=1), gang("urgent", priority=5, created=2), gang("later", created=3)]
    assert plan(jobs, n_devices=8, cluster=FREE).start == (("urgent", ()),)
    half = ClusterView((_node("a"), _node("b", free_host=0.0)))
    jobs = [gang("big", created=1), gang("small", hosts=1, created=2)]
    assert plan(jobs, n_devices=8, cluster=half) == Plan(), "no back-filling past the head"


def test_cluster_and_local_queues_do_not_block_each_other():
    jobs = [running("r", range(8)), gang("g", created=1), q("local", 8, created=0)]
    assert plan(jobs, n_devices=8, cluster=FREE).start == (("g", ()),)
    jobs = [gang("g", created=0), q("local", 8, created=1)]
    busy = ClusterView((_node("a", 0.0), _node("b", 0.0)))
    assert plan(jobs, n_devices=8, cluster=busy).start == (("local", tuple(range(8))),)
    assert plan([running_gang("g", "pg1"), q("local", 8)], n_devices=8, cluster=FREE).start == (
        ("local", tuple(range(8))),
    ), "a running gang holds no local device"


def test_no_gang_starts_while_a_started_one_is_not_shown_placed():
    """The last look would count a starting gang's resources as free: wait for a look that shows it placed."""
    waiting = gang("next", hosts=1, created=1)
    assert plan([running_gang("g", None, hosts=1), waiting], n_devices=8, cluster=FREE) == Plan()
    assert plan([running_gang("g", "pg1", hosts=1), waiting], n_devices=8, cluster=FREE) == Plan()
    placed = ClusterView(FREE.nodes, frozenset({"pg1"}))
    assert plan([running_gang("g", "pg1", hosts=1), waiting], n_devices=8, cluster=placed).start == (("next", ()),)
    two = [gang("a", hosts=1, created=1), gang("b", hosts=1, created=2)]
    assert plan(two, n_devices=8, cluster=FREE).start == (("a", ()),), "one gang per pass"


def test_cluster_jobs_cancelled_requeued_or_failed_without_a_cluster():
    lost = JobView("lost", "interrupted", 8, attempts=0, max_retries=1, gang=GangShape(2, 4))
    p = plan([gang("gone", cancel_requested=True), lost], n_devices=8, cluster=FREE)
    assert p.cancel == ("gone",) and p.requeue == ("lost",) and p.start == (("lost", ()),)
    p = plan([gang("g")], n_devices=8, cluster=None)
    assert p.fail == (("g", "no Ray cluster connected; `%aios cluster connect HOST:PORT`, then resume it"),)
