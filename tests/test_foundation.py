"""The catalog, names, and the %aios magic's dispatch and help."""

import os
import sqlite3
import subprocess
import sys
import threading

import pytest
from IPython.core.error import UsageError

from aios_lab import atomic, config
from aios_lab.catalog import catalog, deleted_version, next_version, retire
from aios_lab.catalog.schema import MIGRATIONS
from aios_lab.errors import AiosError
from aios_lab.names import check_name


@pytest.mark.parametrize("good", ["a", "digits", "mlp-v2.1_x", "0" * 64])
def test_valid_names(good):
    assert check_name(good) == good


@pytest.mark.parametrize("bad", ["", "A", "-x", ".x", "x/y", "../x", "a..b", "x" * 65, "a b", "ä", None, 3])
def test_invalid_names_are_refused(bad):
    with pytest.raises(AiosError, match="invalid"):
        check_name(bad)


def test_paths_cannot_leave_aios_home(aios_home):
    assert config.named("datasets", "digits") == aios_home.resolve() / "datasets" / "digits"
    with pytest.raises(AiosError):
        config.named("datasets", "../../etc")
    with pytest.raises(AiosError):
        config.area("..", "elsewhere")


def test_catalog_is_wal_and_migrated(aios_home):
    cat = catalog()
    assert cat.path.parent == aios_home.resolve()
    assert cat.one("PRAGMA journal_mode")[0] == "wal"
    assert cat.schema_version == len(MIGRATIONS)
    tables = {r[0] for r in cat.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"datasets", "jobs", "metrics", "models", "aliases", "endpoints", "tokens", "audit"} <= tables


def test_catalog_transaction_rolls_back_on_error():
    cat = catalog()
    with pytest.raises(RuntimeError):
        with cat.tx() as db:
            db.execute("INSERT INTO tokens (hash, role, created) VALUES ('h', 'infer', 0)")
            raise RuntimeError("boom")
    assert cat.query("SELECT * FROM tokens") == []


def test_catalog_concurrent_writers_from_threads_and_processes(aios_home):
    cat = catalog()
    code = "from aios_lab.catalog import catalog\nfor i in range(50): catalog().audit('write', 'proc', i=i)\n"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(3)]
    threads = [
        threading.Thread(target=lambda: [cat.audit("write", "thread", i=i) for i in range(50)]) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(p.wait(60) == 0 for p in procs)
    counts = dict(cat.query("SELECT object, COUNT(*) FROM audit GROUP BY object"))
    assert counts == {"proc": 150, "thread": 150}


def test_version_numbers_of_deleted_versions_are_never_given_out_again():
    cat = catalog()
    with cat.tx() as db:
        assert next_version(db, "datasets", "d") == 1
        retire(db, "datasets", "d", 3, "h3")
        assert next_version(db, "datasets", "d") == 4 and next_version(db, "models", "d") == 1
    assert deleted_version("datasets", "d", 3)["hash"] == "h3" and deleted_version("datasets", "d", 2) is None


def test_private_dir_makes_missing_folders_0700_whatever_the_umask(aios_home, tmp_path):
    old = os.umask(0o022)
    try:
        made = config.private_dir(config.area("a", "b", "c"))
        atomic_dir = atomic.staging_root()
    finally:
        os.umask(old)
    assert made == aios_home.resolve() / "a" / "b" / "c"
    modes = [
        oct(p.stat().st_mode & 0o777) for p in (aios_home, aios_home / "a", aios_home / "a" / "b", made, atomic_dir)
    ]
    assert modes == ["0o700"] * 5
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o750)
    os.chmod(mine, 0o750)
    config.private_dir(mine / "x")
    assert mine.stat().st_mode & 0o777 == 0o750  # a folder that exists keeps what its owner chose


def test_the_sweep_removes_only_what_dead_writers_left(aios_home):
    import psutil

    parent = os.getppid()
    started = int(psutil.Process(parent).create_time() * 100)
    root = atomic.staging_root()
    live = root / f"dataset-x-{parent}-{started}-aaaa"  # a live process's folder (its pid and start time)
    recycled = root / f"dataset-x-{parent}-{started + 1}-bbbb"  # the same pid, another process: dead
    gone = root / f"model-y-{2**22 + 7}-1-cccc"  # a pid that does not exist
    foreign = root / "notes"
    for d in (live, recycled, gone, foreign):
        d.mkdir()
    with atomic.staged("variant", "z") as mine:
        atomic.sweep()
        assert mine.is_dir()
    assert sorted(p.name for p in root.iterdir()) == sorted([live.name, foreign.name])


def test_catalog_reopens_existing_file_without_remigrating(aios_home):
    catalog().audit("x", "y")
    raw = sqlite3.connect(aios_home / "catalog.sqlite")
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert raw.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 1


def test_help_lists_every_verb_and_shows_flags(ip):
    text = str(ip.run_line_magic("aios", "help"))
    assert "%aios help" in text
    assert "positional arguments" in str(ip.run_line_magic("aios", "help help"))


def test_unknown_verb_and_bad_flag_are_one_line_usage_errors(ip):
    with pytest.raises(UsageError, match="unknown verb 'frobnicate'"):
        ip.run_line_magic("aios", "frobnicate")
    with pytest.raises(UsageError, match="help help"):
        ip.run_line_magic("aios", "help --bogus")


def test_cli_runs_the_same_verbs():
    out = subprocess.run([sys.executable, "-m", "aios_lab.cli", "help"], capture_output=True, text=True)
    assert out.returncode == 0 and "%aios help" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "aios_lab.cli", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown verb" in bad.stderr
