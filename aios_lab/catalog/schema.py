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
    # 4: versions that were deleted (datasets, models): their numbers are never given out again.
    """
    CREATE TABLE deleted_versions (
        kind TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL, hash TEXT, deleted REAL NOT NULL,
        PRIMARY KEY (kind, name, version));
    """,
    # 5: serving: what an endpoint publishes for readers (status JSON, refreshed by the server), and
    # tokens that can be listed, expire and be revoked (a short public id that is not the hash).
    """
    ALTER TABLE endpoints ADD COLUMN status TEXT;
    ALTER TABLE tokens ADD COLUMN id TEXT;
    ALTER TABLE tokens ADD COLUMN last_used REAL;
    ALTER TABLE tokens ADD COLUMN expires REAL;
    ALTER TABLE tokens ADD COLUMN revoked REAL;
    UPDATE tokens SET id = lower(hex(randomblob(4))) WHERE id IS NULL;
    CREATE UNIQUE INDEX tokens_id ON tokens (id);
    """,
    # 6: what kind of endpoint a row is: a local server process, or a Ray Serve deployment (its driver's pid).
    """
    ALTER TABLE endpoints ADD COLUMN kind TEXT NOT NULL DEFAULT 'local';
    """,
    # 7: release gates: every move of an alias (so rollback knows where it was), aliases that only promote
    # and rollback may move, and the evaluations promote ran (versions are immutable on disk).
    """
    CREATE TABLE alias_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER,
        previous INTEGER, action TEXT NOT NULL, time REAL NOT NULL, user TEXT NOT NULL);
    CREATE INDEX alias_history_model ON alias_history (model, alias, id);
    CREATE TABLE protected_aliases (
        model TEXT NOT NULL, alias TEXT NOT NULL, time REAL NOT NULL, user TEXT NOT NULL,
        PRIMARY KEY (model, alias));
    CREATE TABLE evaluations (
        id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, version INTEGER NOT NULL,
        dataset TEXT, dataset_version INTEGER, split TEXT, metrics TEXT NOT NULL, conditions TEXT NOT NULL,
        passed INTEGER NOT NULL, decision TEXT NOT NULL, alias TEXT, time REAL NOT NULL, user TEXT NOT NULL);
    CREATE INDEX evaluations_model ON evaluations (model, version, id);
    """,
    # 8: sweeps (their driver process and settings) and their trials, each an ordinary job.
    """
    CREATE TABLE sweeps (
        name TEXT PRIMARY KEY, state TEXT NOT NULL, config TEXT NOT NULL, pid INTEGER,
        cancel_requested INTEGER NOT NULL DEFAULT 0, error TEXT,
        created REAL NOT NULL, ended REAL, updated REAL NOT NULL);
    CREATE TABLE sweep_trials (
        sweep TEXT NOT NULL, number INTEGER NOT NULL, job TEXT NOT NULL, params TEXT NOT NULL,
        state TEXT NOT NULL, value REAL, step INTEGER, error TEXT, updated REAL NOT NULL,
        PRIMARY KEY (sweep, number));
    CREATE UNIQUE INDEX sweep_trials_job ON sweep_trials (job);
    """,
    # 9: tokens scoped to models (a JSON list of model names; NULL: every model).
    """
    ALTER TABLE tokens ADD COLUMN models TEXT;
    """,
]
