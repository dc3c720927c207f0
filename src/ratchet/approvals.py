"""Approvals: a human's verdict on each keep of a run, approved or rejected.

Verdicts live in the journal's `approvals` table (the latest row per experiment wins),
and each one also goes to the append-only `audit` table. Only a keep after the run's
baseline takes a verdict; a list of ids with one that is not is refused whole. `review`
(`governance.py`) shows the verdicts, `finalize` (`finalize.py`) replays the keeps they
leave in. They read the journal alone, so `ratchet review` never imports git or pydantic.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ratchet.decisions import Decision
from ratchet.errors import UsageError
from ratchet.journal import Journal
from ratchet.journalrecords import ExperimentRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment INTEGER NOT NULL,
    verdict TEXT NOT NULL CHECK(verdict IN ('approved','rejected')),
    who TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_by_experiment ON approvals(experiment, id);
"""

Verdict = Literal["approved", "rejected"]


def ensure_schema(journal: Journal) -> None:
    journal.db.executescript(SCHEMA)


@dataclass(frozen=True)
class Approval:
    experiment: int
    verdict: str  # approved | rejected
    who: str
    note: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def approval_history(journal: Journal, run: str) -> dict[int, list[Approval]]:
    """Every decision on the run's experiments, oldest first, by experiment."""
    ensure_schema(journal)
    # CROSS JOIN: the few approvals drive the join (each finds its experiment by id), not
    # the run's 100,000 experiments each looking for an approval
    rows = journal.db.execute(
        "SELECT a.experiment, a.verdict, a.who, a.note, a.at FROM approvals a"
        " CROSS JOIN experiments e ON e.id = a.experiment WHERE e.run = ? ORDER BY a.id",
        (run,),
    ).fetchall()
    history: dict[int, list[Approval]] = {}
    for row in rows:
        history.setdefault(row[0], []).append(Approval(*row))
    return history


def identity(project: Path) -> str:
    """Who decides: the project's git identity, else $USER."""
    from ratchet import workspace

    name = workspace.git(project, "config", "--get", "user.name", check=False).strip()
    email = workspace.git(project, "config", "--get", "user.email", check=False).strip()
    if name and email:
        return f"{name} <{email}>"
    return name or email or os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"


def keeps(journal: Journal, run: str) -> list[ExperimentRecord]:
    """The run's keeps after its baseline, oldest first."""
    baseline = journal.baseline(run)
    first = baseline.id if baseline is not None else None
    return [r for r in journal.keeps(run) if not r.is_baseline and r.id != first]


def _keep(journal: Journal, experiment: int) -> ExperimentRecord:
    record = journal.experiment(experiment)
    if record is None:
        raise UsageError(f"no experiment #{experiment}; 'ratchet log' lists them")
    if record.decision != Decision.KEEP:
        raise UsageError(
            f"experiment #{experiment} is a {record.decision or record.stage}, not a keep; "
            "only keeps can be approved or rejected"
        )
    baseline = journal.baseline(record.run)
    if record.is_baseline or (baseline is not None and baseline.id == record.id):
        raise UsageError(
            f"experiment #{experiment} is the baseline of run '{record.run}', the base every "
            "keep builds on; approve or reject the keeps after it"
        )
    return record


def record_verdict(
    journal: Journal, experiments: list[int], verdict: Verdict, who: str, note: str = ""
) -> list[tuple[ExperimentRecord, Approval]]:
    """Approve or reject keeps: all of them or, when one id is not a keep, none."""
    ensure_schema(journal)
    records = [_keep(journal, e) for e in dict.fromkeys(experiments)]
    done: list[tuple[ExperimentRecord, Approval]] = []
    at = time.time()
    journal.db.execute("BEGIN IMMEDIATE")
    try:
        for record in records:
            journal.db.execute(
                "INSERT INTO approvals (experiment, verdict, who, note, at) VALUES (?, ?, ?, ?, ?)",
                (record.id, verdict, who, note, at),
            )
            journal.audit(
                record.run, verdict, experiment=record.id, commit=record.commit, who=who, note=note
            )
            done.append((record, Approval(record.id, verdict, who, note, at)))
    except BaseException:
        journal.db.execute("ROLLBACK")
        raise
    journal.db.execute("COMMIT")
    return done
