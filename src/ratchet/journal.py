"""The journal: `.ratchet/journal.db`, the source of truth (`results.py` exports it).

The scheduler alone writes it. Every experiment is written when it starts
(`proposing`), when its proposal is known (`measuring`) and when it is decided, so a
restart can tell what was in flight and mark it `interrupted`.

`Journal` owns the connection and the queries; the tables and their upgrades are
`journalschema`'s, the records its queries return are `journalrecords`' (imported here
too, where most code looks for them).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ratchet import journalcheck
from ratchet.errors import JournalDamaged, is_journal_damage
from ratchet.journalcounts import (
    KEEP_AFTER,
    baseline_decision_counts,
    decision_counts,
    elapsed,
    run_counts,
)
from ratchet.journalcounts import RunCounts as RunCounts  # where it was defined before
from ratchet.journalrecords import ExperimentRecord as ExperimentRecord
from ratchet.journalrecords import MeasurementRecord as MeasurementRecord
from ratchet.journalrecords import RunRecord as RunRecord
from ratchet.journalschema import WITHOUT_PATCH, set_up
from ratchet.private import DIR_MODE, create_private, tighten_file

JOURNAL_FILE = "journal.db"


class Journal:
    def __init__(self, path: Path, verify: bool = False) -> None:
        """Open (or create) the journal. With `verify`, as before a run writes to it, a
        damaged file raises `JournalDamaged` before anything is written into it."""
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self.path = path
        self.verified = verify
        self.check = ""  # how opening it checked the file: schema, recent or full
        self._decided = 0  # decisions written through this journal
        # SQLite gives the -wal and -shm files the database's own mode: 0600 throughout
        create_private(path)
        for suffix in ("-wal", "-shm"):
            tighten_file(path.with_name(path.name + suffix))
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            problem = self._open(verify)
        except sqlite3.DatabaseError as error:
            if not is_journal_damage(error):
                self.db.close()
                raise
            problem = str(error)
        if problem is not None:
            self.db.close()
            raise JournalDamaged(
                f"the journal {path} is damaged ({problem}); nothing was written to it. "
                "Move it aside to start afresh, or restore it from a backup"
            )

    def _open(self, verify: bool) -> str | None:
        """Set the journal up; what is wrong with the file, if `verify` finds anything."""
        self.db.row_factory = sqlite3.Row
        if verify:
            problem, self.check = journalcheck.check(self.db, self.path)
            if problem is not None:
                return problem
        set_up(self.db)
        if verify:  # sound so far: a crash from here on leaves the cheaper check to do
            journalcheck.mark_open(self.db, self.path)
        return None

    @classmethod
    def read_only(cls, path: Path) -> Journal:
        """The journal opened for reading only (reports, the dashboard): it never writes,
        so it can be read while a run writes it (WAL). Raises `sqlite3.OperationalError`
        when the file is missing."""
        journal = cls.__new__(cls)
        journal.path, journal.verified, journal.check, journal._decided = path, False, "", 0
        journal.db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                     isolation_level=None, check_same_thread=False)  # fmt: skip
        journal.db.row_factory = sqlite3.Row
        journal.db.execute("PRAGMA busy_timeout=5000")
        return journal

    def close(self) -> None:
        rows, whole = None, False
        if self.verified:  # a run's journal, verified when it opened: checkpointed whole?
            with contextlib.suppress(sqlite3.Error):
                rows = journalcheck.last_ids(self.db)
                busy, left, _ = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                whole = busy == 0 and left == 0
        self.db.close()
        if whole and rows is not None:  # as this run leaves it: the next check is cheap
            journalcheck.mark_closed(self.path, rows)

    @property
    def full_check(self) -> bool:
        """Whether opening it read every page of the file."""
        return self.check == "full"

    # runs ---------------------------------------------------------------------------
    def run(self, name: str) -> RunRecord | None:
        row = self.db.execute("SELECT * FROM runs WHERE name = ?", (name,)).fetchone()
        return RunRecord(**dict(row)) if row else None

    def runs(self) -> list[RunRecord]:
        rows = self.db.execute("SELECT * FROM runs ORDER BY created_at").fetchall()
        return [RunRecord(**dict(row)) for row in rows]

    def create_run(self, record: RunRecord) -> None:
        self.db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.name,
                record.branch,
                record.base_commit,
                record.spec_digest,
                record.metric,
                record.goal,
                record.created_at,
            ),
        )

    # experiments --------------------------------------------------------------------
    def move_run_base(self, run: str, base: str) -> None:
        """A run that never measured anything starts from the commit it is started on."""
        self.db.execute("UPDATE runs SET base_commit = ? WHERE name = ?", (base, run))

    def begin_experiment(self, run: str, slot: int, parent: str, proposer: str) -> int:
        cursor = self.db.execute(
            "INSERT INTO experiments (run, slot, parent, proposer, stage, started_at) "
            "VALUES (?, ?, ?, ?, 'proposing', ?)",
            (run, slot, parent, proposer, time.time()),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def record_proposal(
        self,
        experiment: int,
        rationale: str,
        patch: str,
        files: list[str],
        meta: dict[str, Any],
        cost_seconds: float,
        cost_tokens: int = 0,
        cost_usd: float = 0.0,
        proposer: str | None = None,
    ) -> None:
        self.db.execute(
            "UPDATE experiments SET stage = 'measuring', rationale = ?, patch = ?, files = ?,"
            " meta = ?, cost_seconds = ?, cost_tokens = ?, cost_usd = ?,"
            " proposer = COALESCE(?, proposer) WHERE id = ?",
            (
                rationale,
                patch,
                json.dumps(files),
                json.dumps(meta),
                cost_seconds,
                cost_tokens,
                cost_usd,
                proposer,
                experiment,
            ),
        )

    def add_measurement(
        self,
        experiment: int,
        seed: int,
        status: str,
        value: float | None,
        metrics: dict[str, float],
        duration: float,
        output: str,
        started_at: float,
    ) -> None:
        self.db.execute(
            "INSERT INTO measurements (experiment, seed, status, value, metrics, duration,"
            " output, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (experiment, seed, status, value, json.dumps(metrics), duration, output, started_at),
        )

    def decide(
        self,
        experiment: int,
        decision: str,
        why: str,
        value: float | None = None,
        metrics: dict[str, float] | None = None,
        commit: str | None = None,
        duration: float | None = None,
    ) -> None:
        self.db.execute(
            "UPDATE experiments SET stage = 'done', decision = ?, why = ?, value = ?,"
            " metrics = ?, commit_sha = ?, duration = ?, ended_at = ? WHERE id = ?",
            (
                decision,
                why,
                value,
                json.dumps(metrics or {}),
                commit,
                duration,
                time.time(),
                experiment,
            ),
        )
        if self.verified:  # a run's journal: now and then, the elapsed time's kept sum
            self._decided += 1
            if self._decided % KEEP_AFTER == 0:
                row = self.db.execute("SELECT run FROM experiments WHERE id = ?", (experiment,))
                elapsed(self.db, row.fetchone()[0], keep_state=True)

    def interrupt_unfinished(self, run: str) -> list[int]:
        """Give every experiment left in flight by a dead ratchet its terminal decision."""
        rows = self.db.execute(
            "SELECT id, stage FROM experiments WHERE run = ? AND decision IS NULL", (run,)
        ).fetchall()
        with self.db:
            for row in rows:
                self.db.execute(
                    "UPDATE experiments SET stage = 'done', decision = 'interrupted', why = ?,"
                    " ended_at = ? WHERE id = ?",
                    (
                        f"ratchet stopped while the experiment was {row['stage']}; nothing of it"
                        " was kept",
                        time.time(),
                        row["id"],
                    ),
                )
        return [row["id"] for row in rows]

    def experiment(self, experiment: int) -> ExperimentRecord | None:
        row = self.db.execute("SELECT * FROM experiments WHERE id = ?", (experiment,)).fetchone()
        return ExperimentRecord.from_row(row) if row else None

    def experiments(
        self, run: str | None = None, limit: int | None = None, patches: bool = True
    ) -> list[ExperimentRecord]:
        """A run's experiments, oldest first; with `limit`, only the newest ones; without
        `patches`, each record's patch is "" (lists that do not show them)."""
        query = f"SELECT {'*' if patches else WITHOUT_PATCH} FROM experiments"
        args: list[Any] = []
        if run is not None:
            query += " WHERE run = ?"
            args.append(run)
        query += " ORDER BY id DESC" if limit else " ORDER BY id"
        if limit:
            query += " LIMIT ?"
            args.append(limit)
        rows = [ExperimentRecord.from_row(r) for r in self.db.execute(query, args)]
        return rows[::-1] if limit else rows

    def iter_experiments(self, run: str, patches: bool = True) -> Iterator[ExperimentRecord]:
        columns = "*" if patches else WITHOUT_PATCH
        query = f"SELECT {columns} FROM experiments WHERE run = ? ORDER BY id"
        for row in self.db.execute(query, (run,)):
            yield ExperimentRecord.from_row(row)

    def decided(self, run: str, limit: int, skip: int = 0) -> list[tuple[int, str, str]]:
        """(id, decision, rationale) of the run's decided experiments, newest first,
        past the newest `skip`: a long history's compact lines, no row decoded whole."""
        rows = self.db.execute(
            "SELECT id, decision, rationale FROM experiments WHERE run = ?"
            " AND decision IS NOT NULL ORDER BY id DESC LIMIT ? OFFSET ?",
            (run, limit, skip),
        )
        return [(row[0], row[1], row[2]) for row in rows]

    def recent_decided(self, run: str, limit: int) -> list[ExperimentRecord]:
        """The run's `limit` newest decided experiments, oldest first, without patches."""
        rows = self.db.execute(
            f"SELECT {WITHOUT_PATCH} FROM experiments WHERE run = ? AND decision IS NOT NULL"
            " ORDER BY id DESC LIMIT ?",
            (run, limit),
        ).fetchall()
        return [ExperimentRecord.from_row(r) for r in reversed(rows)]

    def keeps(self, run: str) -> list[ExperimentRecord]:
        """The run's keeps (the baseline's included), oldest first."""
        rows = self.db.execute(
            "SELECT * FROM experiments WHERE run = ? AND decision = 'keep' ORDER BY id", (run,)
        ).fetchall()
        return [ExperimentRecord.from_row(r) for r in rows]

    def trials(self, run: str, recent: int, best: int) -> list[ExperimentRecord]:
        """What a proposer learns from at its start, whatever the history's length: the
        `recent` newest decided experiments, the `best` measured ones by value, and the
        incumbent; oldest first, without patches."""
        record = self.run(run)
        order = "DESC" if record is not None and record.goal == "maximize" else "ASC"
        ids = [row[0] for row in self.db.execute(
            "SELECT id FROM experiments WHERE run = ? AND decision IS NOT NULL"
            " ORDER BY id DESC LIMIT ?", (run, recent))]  # fmt: skip
        ids += [row[0] for row in self.db.execute(
            "SELECT id FROM experiments WHERE run = ? AND value IS NOT NULL AND decision IN"
            f" ('keep', 'discard', 'duplicate', 'stale') ORDER BY value {order} LIMIT ?",
            (run, best))]  # fmt: skip
        incumbent = self.db.execute(
            "SELECT id FROM experiments WHERE run = ? AND decision = 'keep' ORDER BY id DESC"
            " LIMIT 1",
            (run,),
        ).fetchone()
        ids += [incumbent[0]] if incumbent else []
        chosen = sorted(set(ids))
        rows = self.db.execute(
            f"SELECT {WITHOUT_PATCH} FROM experiments WHERE id IN"
            f" ({', '.join('?' * len(chosen))}) ORDER BY id",
            chosen,
        ).fetchall()
        return [ExperimentRecord.from_row(r) for r in rows]

    def incumbent(self, run: str) -> ExperimentRecord | None:
        row = self.db.execute(
            "SELECT * FROM experiments WHERE run = ? AND decision = 'keep' ORDER BY id DESC"
            " LIMIT 1",
            (run,),
        ).fetchone()
        return ExperimentRecord.from_row(row) if row else None

    def baseline(self, run: str) -> ExperimentRecord | None:
        """The run's measured baseline; while it has none, its latest attempt (killed or
        failed), which says why."""
        row = self.db.execute(
            "SELECT * FROM experiments WHERE run = ? AND proposer = 'baseline'"
            " ORDER BY decision = 'keep' DESC, CASE WHEN decision = 'keep' THEN id ELSE -id END"
            " LIMIT 1",
            (run,),
        ).fetchone()
        return ExperimentRecord.from_row(row) if row else None

    def failures(self, run: str, limit: int) -> list[ExperimentRecord]:
        """The run's newest failures, without patches."""
        rows = self.db.execute(
            f"SELECT {WITHOUT_PATCH} FROM experiments WHERE run = ? AND decision NOT IN"
            " ('keep', 'discard', 'no-change', 'duplicate', 'interrupted') ORDER BY id DESC LIMIT ?",
            (run, limit),
        ).fetchall()
        return [ExperimentRecord.from_row(r) for r in rows]

    def measurements(self, experiment: int) -> list[MeasurementRecord]:
        rows = self.db.execute(
            "SELECT * FROM measurements WHERE experiment = ? ORDER BY id", (experiment,)
        ).fetchall()
        return [MeasurementRecord(**{**dict(r), "metrics": json.loads(r["metrics"])}) for r in rows]

    def same_patch(self, run: str, patch_hash: str, before: int) -> ExperimentRecord | None:
        """The first earlier experiment of the run whose normalized patch is the same, or
        else one that another slot is measuring now (its decision is still to come)."""
        row = self.db.execute(
            "SELECT * FROM experiments WHERE run = ? AND patch_hash = ? AND id != ?"
            " AND (decision IS NULL AND stage = 'measuring' OR decision != 'interrupted'"
            " AND id < ?) ORDER BY decision IS NULL, id LIMIT 1",
            (run, patch_hash, before, before),
        ).fetchone()
        return ExperimentRecord.from_row(row) if row else None

    def set_patch_hash(self, experiment: int, patch_hash: str) -> None:
        self.db.execute(
            "UPDATE experiments SET patch_hash = ? WHERE id = ?", (patch_hash, experiment)
        )

    def set_parent(self, experiment: int, parent: str) -> None:
        """A candidate rebased onto a newer incumbent: that is now its parent."""
        self.db.execute("UPDATE experiments SET parent = ? WHERE id = ?", (parent, experiment))

    def set_holdout(self, experiment: int, value: float | None) -> None:
        self.db.execute("UPDATE experiments SET holdout = ? WHERE id = ?", (value, experiment))

    def update_value(self, experiment: int, value: float) -> None:
        """An incumbent re-measured: its value is the mean of all its measurements."""
        self.db.execute("UPDATE experiments SET value = ? WHERE id = ?", (value, experiment))

    def measured_values(self, run: str) -> list[tuple[int, float]]:
        """Every successful measurement of the run, oldest first: the noise model's data."""
        rows = self.db.execute(
            "SELECT m.experiment, m.value FROM measurements m JOIN experiments e"
            " ON e.id = m.experiment WHERE e.run = ? AND m.status = 'ok' ORDER BY m.id",
            (run,),
        ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def measurement_rows(self, run: str) -> list[tuple[int, str, float, int]]:
        """(experiment, status, value, seed) of every measurement with a value, oldest
        first, of the experiments a resumed judge needs: the baseline, the keeps and those
        confirmed (as many as the run's keeps, not its experiments; through indexes)."""
        rows = self.db.execute(
            "SELECT m.experiment, m.status, m.value, m.seed FROM measurements m"
            " WHERE m.value IS NOT NULL AND m.experiment IN ("
            " SELECT id FROM experiments WHERE run = ?1 AND decision = 'keep'"
            " UNION SELECT id FROM experiments WHERE run = ?1 AND proposer = 'baseline'"
            " UNION SELECT c.experiment FROM measurements c JOIN experiments e"
            " ON e.id = c.experiment WHERE c.status = 'confirm' AND e.run = ?1)"
            " ORDER BY m.id",
            (run,),
        ).fetchall()
        return [(row[0], row[1], row[2], row[3]) for row in rows]

    def last_output(self, experiment: int) -> str:
        row = self.db.execute(
            "SELECT output FROM measurements WHERE experiment = ? ORDER BY id DESC LIMIT 1",
            (experiment,),
        ).fetchone()
        return str(row["output"]) if row else ""

    def counts(self, run: str) -> RunCounts:
        """The run's totals; a run's own journal keeps the elapsed time's partial sum."""
        return run_counts(self.db, run, keep_state=self.verified)

    def decision_counts(self, run: str) -> dict[str, int]:
        return decision_counts(self.db, run)

    def baseline_decision_counts(self, run: str) -> dict[str, int]:
        """The decisions of the run's baseline attempts: no experiments of the search."""
        return baseline_decision_counts(self.db, run)

    def decided_count(self, run: str) -> int:
        return int(self.db.execute(
            "SELECT COUNT(*) FROM experiments WHERE run = ? AND decision IS NOT NULL", (run,)
        ).fetchone()[0])  # fmt: skip

    def decided_ids(self, run: str) -> Iterator[int]:
        """The run's decided experiments' ids, in order, from the summary index alone."""
        for (experiment,) in self.db.execute(
            "SELECT id FROM experiments WHERE run = ? AND decision IS NOT NULL ORDER BY id",
            (run,),
        ):
            yield int(experiment)

    # audit --------------------------------------------------------------------------
    def audit(self, run: str | None, event: str, **detail: Any) -> None:
        self.db.execute(
            "INSERT INTO audit (at, run, event, detail) VALUES (?, ?, ?, ?)",
            (time.time(), run, event, json.dumps(detail, sort_keys=True)),
        )
