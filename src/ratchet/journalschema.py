"""The journal's shape: its tables, their indexes, and how a journal written by an older
ratchet is brought up to date when it is opened.

`Journal` (in `journal.py`) owns the connection and what is written and read through it;
this module owns what the file holds. Columns are only ever added (older journals gain
them on open, as NULL), indexes are created once on the first open by a ratchet that
knows them, and the spans table of `journalcounts` is created with the rest.
"""

from __future__ import annotations

import sqlite3

from ratchet.journalcounts import SPANS_SCHEMA

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    branch TEXT NOT NULL,
    base_commit TEXT NOT NULL,
    spec_digest TEXT NOT NULL,
    metric TEXT NOT NULL,
    goal TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run TEXT NOT NULL REFERENCES runs(name),
    slot INTEGER NOT NULL,
    parent TEXT NOT NULL,
    commit_sha TEXT,
    proposer TEXT NOT NULL,
    rationale TEXT NOT NULL DEFAULT '',
    patch TEXT NOT NULL DEFAULT '',
    files TEXT NOT NULL DEFAULT '[]',
    meta TEXT NOT NULL DEFAULT '{}',
    cost_seconds REAL NOT NULL DEFAULT 0,
    cost_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    stage TEXT NOT NULL,
    decision TEXT,
    why TEXT,
    value REAL,
    metrics TEXT NOT NULL DEFAULT '{}',
    duration REAL,
    started_at REAL NOT NULL,
    ended_at REAL,
    holdout REAL,
    patch_hash TEXT
);
CREATE INDEX IF NOT EXISTS experiments_by_run ON experiments(run, id);
CREATE INDEX IF NOT EXISTS experiments_by_decision ON experiments(run, decision, id);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment INTEGER NOT NULL REFERENCES experiments(id),
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    value REAL,
    metrics TEXT NOT NULL DEFAULT '{}',
    duration REAL NOT NULL,
    output TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS measurements_by_experiment ON measurements(experiment);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    run TEXT,
    event TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
"""

# what views and summaries read of every experiment, in one index: counting or
# listing a run of 100,000 experiments never reads their patches (stored in the rows)
SUMMARY_INDEX = (
    "CREATE INDEX IF NOT EXISTS experiments_summary ON experiments(run, id, decision,"
    " proposer, value, cost_usd, started_at, ended_at)"
)
PROPOSER_INDEX = (
    "CREATE INDEX IF NOT EXISTS experiments_by_proposer ON experiments(run, proposer, id)"
)
# the union of experiments' spans (a run's elapsed time) is read in start order
START_INDEX = (
    "CREATE INDEX IF NOT EXISTS experiments_by_start ON experiments(run, started_at, id, ended_at)"
)
# a proposer's best experiments, read in value order
VALUE_INDEX = "CREATE INDEX IF NOT EXISTS experiments_by_value ON experiments(run, value, decision)"
CONFIRM_INDEX = (
    "CREATE INDEX IF NOT EXISTS measurements_by_status ON measurements(status, experiment)"
)
# every column but the patch, for lists that do not show it (the record's patch is "")
WITHOUT_PATCH = (
    "id, run, slot, parent, commit_sha, proposer, rationale, '' AS patch, files, meta,"
    " cost_seconds, cost_tokens, cost_usd, stage, decision, why, value, metrics, duration,"
    " started_at, ended_at, holdout, patch_hash"
)

# columns a journal of an older ratchet lacks, added on open
ADDED_COLUMNS = (("holdout", "REAL"), ("patch_hash", "TEXT"))
PATCH_INDEX = "CREATE INDEX IF NOT EXISTS experiments_by_patch ON experiments(run, patch_hash)"


def set_up(db: sqlite3.Connection) -> None:
    """The journal's settings, tables and indexes, the missing ones created: what every
    opening for writing does before anything is written."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    db.executescript(SCHEMA + SPANS_SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(experiments)")}
    for column, kind in ADDED_COLUMNS:
        if column not in columns:  # a journal written by an older ratchet
            db.execute(f"ALTER TABLE experiments ADD COLUMN {column} {kind}")
    db.execute(PATCH_INDEX)
    db.execute(SUMMARY_INDEX)  # built once, on the first open by this ratchet
    db.execute(PROPOSER_INDEX)
    db.execute(CONFIRM_INDEX)
    db.execute(START_INDEX)
    db.execute(VALUE_INDEX)
