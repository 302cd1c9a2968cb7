"""The catalog's schema as an ordered list of migrations; ``PRAGMA user_version`` counts those applied.

Append new migrations at the end; never edit one that has shipped.
"""

MIGRATIONS: list[str] = [
    # 1: everything the first release tracks.
    """
    CREATE TABLE datasets (
        name TEXT NOT NULL, version INTEGER NOT NULL, hash TEXT NOT NULL, path TEXT NOT NULL,
        source TEXT NOT NULL, seed INTEGER NOT NULL, splits TEXT NOT NULL, schema TEXT NOT NULL,
        nbytes INTEGER NOT NULL, created REAL NOT NULL,
        PRIMARY KEY (name, version), UNIQUE (name, hash));
    CREATE TABLE model_defs (
        name TEXT NOT NULL, version INTEGER NOT NULL, hash TEXT NOT NULL, spec TEXT NOT NULL,
        created REAL NOT NULL, PRIMARY KEY (name, version), UNIQUE (name, hash));
    CREATE TABLE jobs (
        name TEXT PRIMARY KEY, state TEXT NOT NULL, config TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0, n_devices INTEGER NOT NULL, devices TEXT,
        step INTEGER NOT NULL DEFAULT 0, steps INTEGER NOT NULL, pid INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0, error TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL, started REAL, ended REAL, updated REAL NOT NULL);
    CREATE INDEX jobs_state ON jobs (state, priority, created);
    CREATE TABLE metrics (
        job TEXT NOT NULL, step INTEGER NOT NULL, time REAL NOT NULL, split TEXT, data TEXT NOT NULL);
    CREATE INDEX metrics_job_step ON metrics (job, step);
    CREATE TABLE variants (
        job TEXT NOT NULL, variant TEXT NOT NULL, method TEXT NOT NULL, checkpoint_step INTEGER NOT NULL,
        path TEXT NOT NULL, report TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (job, variant));
    CREATE TABLE models (
        name TEXT NOT NULL, version INTEGER NOT NULL, path TEXT NOT NULL, manifest_sha256 TEXT NOT NULL,
        nbytes INTEGER NOT NULL, signature TEXT NOT NULL, metrics TEXT NOT NULL, lineage TEXT NOT NULL,
        created_by TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (name, version));
    CREATE TABLE aliases (
        model TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL, updated REAL NOT NULL,
        PRIMARY KEY (model, alias));
    CREATE TABLE endpoints (
        url TEXT PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL, pid INTEGER NOT NULL,
        models TEXT NOT NULL, state TEXT NOT NULL, started REAL NOT NULL, updated REAL NOT NULL);
    CREATE TABLE tokens (
        hash TEXT PRIMARY KEY, role TEXT NOT NULL, label TEXT, created REAL NOT NULL);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, user TEXT NOT NULL,
        action TEXT NOT NULL, object TEXT NOT NULL, details TEXT NOT NULL);
    """,
    # 2: the job's supervisor process (it restarts a crashed worker) and its device kind.
    """
    ALTER TABLE jobs ADD COLUMN supervisor_pid INTEGER;
    ALTER TABLE jobs ADD COLUMN device_kind TEXT NOT NULL DEFAULT 'cpu';
    """,
    # 3: what a running job's worker found out: device platform, bytes of state per device.
    """
    ALTER TABLE jobs ADD COLUMN info TEXT;
    """,
]
