"""Provenance like git: a job records the commit and dirty state of the repository holding what launched it, the
notebook (or script) path and the launching cell's hash; publish carries it into the version's lineage, and
``%aios lineage`` shows the chain with its audit entries. Real git repositories, real jobs, real registry."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

import aios_lab as aios
from aios_lab import provenance
from aios_lab.verbs import run

SMALL = dict(model="mlp", devices=1, batch=64, steps=20, checkpoint_every=20, eval_every=20, lr=3e-3)


def git(repo, *args):
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x",
    }
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repository with one commit holding notes.txt; nothing above tmp_path counts as a repository."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    path = tmp_path / "work"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "notes.txt").write_text("hello\n")
    git(path, "add", "notes.txt")
    git(path, "commit", "-q", "-m", "first")
    return path


def test_repo_state_reads_commit_branch_and_dirty_state(repo, tmp_path, monkeypatch):
    head = git(repo, "rev-parse", "HEAD")
    state = provenance.repo_state(str(repo), str(repo / "notes.txt"))
    assert state == {"root": str(repo), "commit": head, "branch": "main", "dirty": False, "changes": 0}
    (repo / "new.py").write_text("print(1)\n")
    assert provenance.repo_state(str(repo))["dirty"] is False  # an unrelated untracked file is not a change
    assert provenance.repo_state(str(repo), str(repo / "new.py"))["dirty"] is True  # the launcher is not committed
    (repo / "notes.txt").write_text("changed\n")
    assert provenance.repo_state(str(repo))["dirty"] is True and provenance.repo_state(str(repo))["changes"] == 1
    assert not (repo / ".git" / "index.lock").exists()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert provenance.repo_state(str(outside)) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    assert provenance.repo_state(str(empty))["commit"] is None  # no commit yet
    monkeypatch.setenv("PATH", str(outside))  # no git at all
    assert provenance.repo_state(str(repo)) is None


def test_in_a_kernel_the_notebook_session_and_the_cell_are_recorded(ip, repo, monkeypatch):
    nb = repo / "analysis.ipynb"
    nb.write_text("{}")
    git(repo, "add", "analysis.ipynb")
    git(repo, "commit", "-q", "-m", "notebook")
    monkeypatch.setenv("JPY_SESSION_NAME", str(nb))
    cell = "from aios_lab import provenance\nprov = provenance.capture()"
    ip.run_cell(cell, store_history=True)
    prov = ip.user_ns["prov"]
    assert prov["notebook"] == str(nb) and prov["script"] is None
    assert prov["cell_sha256"] == hashlib.sha256(cell.encode()).hexdigest()
    assert prov["git"]["commit"] == git(repo, "rev-parse", "HEAD") and prov["git"]["dirty"] is False
    # ipykernel's __session__ (from the same variable), relative to the kernel's folder: the notebook's
    monkeypatch.delenv("JPY_SESSION_NAME")
    monkeypatch.chdir(repo)
    ip.user_ns["__session__"] = "analysis.ipynb"
    (repo / "notes.txt").write_text("edited\n")
    ip.run_cell("prov = provenance.capture()", store_history=True)
    assert ip.user_ns["prov"]["notebook"] == str(nb) and ip.user_ns["prov"]["git"]["dirty"] is True


def test_a_job_from_a_script_carries_its_commit_into_the_lineage_of_what_it_published(repo, aios_home):
    script = repo / "train.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import aios_lab as aios
            aios.dataset("digits", "sklearn:digits", seed=0)
            aios.train("prov", dataset="digits", **{SMALL!r})
            """
        )
    )
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "train")
    head = git(repo, "rev-parse", "HEAD")
    env = {**os.environ, "AIOS_HOME": str(aios_home)}
    subprocess.run([sys.executable, str(script)], check=True, env=env, cwd=str(repo.parent), timeout=120)
    job = aios.job("prov")
    prov = job.config["provenance"]
    assert prov["script"] == str(script) and prov["notebook"] is None
    assert prov["git"] == {"root": str(repo), "commit": head, "branch": "main", "dirty": False, "changes": 0}
    assert job.wait(timeout=240) == "succeeded", job.log_tail()
    aios.compress("prov", "int8")
    mv = aios.publish("prov", variant="int8", as_="digits", alias="production")
    assert mv.lineage["provenance"] == prov  # the version keeps it, even after the job is gone

    chain = aios.lineage("digits:production")
    links = [(k.link, k.object) for k in chain.chain]
    assert links == [
        ("dataset", "digits@1"),
        ("job", "prov"),
        ("variant", "prov/int8"),
        ("model", "digits:v1"),
        ("alias", "digits@production"),
    ]
    by = {k.link: k for k in chain.chain}
    assert by["job"].details["commit"] == head and by["job"].details["dirty"] is False
    assert by["job"].details["script"] == str(script) and by["job"].details["config"]["steps"] == 20
    assert [a["action"] for a in by["dataset"].audit] == ["dataset.declare"]
    assert [a["action"] for a in by["job"].audit] == ["job.submit"]
    assert [a["action"] for a in by["variant"].audit] == ["compress"]
    assert [a["action"] for a in by["model"].audit] == ["publish"]
    assert [a["action"] for a in by["alias"].audit] == ["alias"]
    text = str(run("lineage digits:1"))
    assert head[:10] in text and "dataset.declare" in text and "digits@production" in text
    doc = json.loads(str(run("lineage digits --json")))
    assert doc["chain"][1]["details"]["commit"] == head and doc["version"] == 1
    assert "<table" in chain._repr_html_()

    # a deleted job still shows what it was: the version kept the provenance, the audit log the rest
    aios.delete_job("prov", force=True)
    job_link = next(k for k in aios.lineage("digits").chain if k.link == "job")
    assert job_link.details["state"] == "deleted" and job_link.details["commit"] == head
    assert [a["action"] for a in job_link.audit] == ["job.submit", "job.delete"]


def test_a_job_launched_by_the_magic_records_the_cell(ip, repo, monkeypatch, aios_home):
    monkeypatch.setenv("JPY_SESSION_NAME", str(repo / "nb.ipynb"))
    aios.dataset("digits", "sklearn:digits", seed=0)
    cell = "job = %aios train cell-job --dataset digits --model mlp --devices 1 --steps 10 --batch 64"
    ip.run_cell(cell, store_history=True)
    job = ip.user_ns["job"]
    try:
        prov = job.config["provenance"]
        assert prov["cell_sha256"] == hashlib.sha256(cell.encode()).hexdigest()
        assert prov["notebook"] == str(repo / "nb.ipynb") and prov["git"]["dirty"] is True  # nb.ipynb: not committed
    finally:
        job.cancel()
        job.wait(timeout=240)
