"""Trials in the journal: a table of their own, and where each trial's folder lives.

One row per trial: whose tree ran (`experiment`), for whose judging it ran (`judged`,
the experiment whose cost it adds to), the task, the attempt, the split, the status, the
reward, the duration, tokens, cost, and the trial's folder. Search trials' folders lie
under `.ratchet/trials/`; holdout trials' under `.ratchet/holdout/`, which no proposer's
sandbox, brief or tool is given.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ratchet.journal import Journal
from ratchet.suite.traces import write_trial_record
from ratchet.suite.trials import Split, TrialResult, TrialStatus, TrialUsage

TRIALS_DIR = "trials"  # search trials: traces the meta-agent may read
HOLDOUT_DIR = "holdout"  # sealed: never shown to a proposer

SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run TEXT NOT NULL,
    experiment INTEGER NOT NULL REFERENCES experiments(id),
    judged INTEGER NOT NULL REFERENCES experiments(id),
    task TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    split TEXT NOT NULL,
    status TEXT NOT NULL,
    reward REAL,
    duration REAL NOT NULL,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    folder TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS trials_by_experiment ON trials(experiment, split, task, attempt);
CREATE INDEX IF NOT EXISTS trials_by_run ON trials(run, split, experiment);
"""


@dataclass(frozen=True)
class TrialRow:
    experiment: int
    task: str
    attempt: int
    split: Split
    status: TrialStatus
    reward: float | None
    duration: float
    cost_usd: float
    folder: Path
    error: str

    @property
    def decides(self) -> bool:
        return self.status in (TrialStatus.PASSED, TrialStatus.FAILED)


def trial_folder(
    state: Path, run: str, split: Split, experiment: int, task: str, attempt: int
) -> Path:
    """Where one trial's record, trajectory and logs go."""
    top = HOLDOUT_DIR if split == Split.HOLDOUT else TRIALS_DIR
    return state / top / run / str(experiment) / task / str(attempt)


class TrialStore:
    """The journal's `trials` table; its writes happen while the run's decision is held."""

    def __init__(self, journal: Journal) -> None:
        self.db = journal.db
        self.db.executescript(SCHEMA)

    def record(
        self,
        run: str,
        experiment: int,
        judged: int,
        split: Split,
        trials: Iterable[tuple[TrialResult, Path]],
    ) -> None:
        """The trials' rows, and each folder's `trial.json` marked with its split, whatever
        the runner wrote there: the traces reader shows only folders marked search."""
        trials = list(trials)
        for trial, folder in trials:
            write_trial_record(folder, trial, split.value)
        rows = [
            (run, experiment, judged, t.task, t.attempt, split.value, t.status.value, t.reward,
             t.duration_s, t.usage.input_tokens, t.usage.output_tokens, t.usage.cost_usd,
             str(folder), t.error, time.time())
            for t, folder in trials
        ]  # fmt: skip
        with self.db:
            self.db.executemany(
                "INSERT INTO trials (run, experiment, judged, task, attempt, split, status, reward,"
                " duration, input_tokens, output_tokens, cost_usd, folder, error, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def charge(self, experiment: int, usage: TrialUsage) -> None:
        """The task agent's spend joins the experiment's cost, which `max_cost_usd` caps."""
        if usage.cost_usd > 0:
            self.db.execute(
                "UPDATE experiments SET cost_usd = cost_usd + ? WHERE id = ?",
                (usage.cost_usd, experiment),
            )

    def trials(self, experiment: int, split: Split) -> list[TrialRow]:
        """An experiment's trials on one split, oldest first (a later one of the same
        task and attempt replaces an earlier one where they are keyed)."""
        rows = self.db.execute(
            "SELECT experiment, task, attempt, split, status, reward, duration, cost_usd, folder,"
            " error FROM trials WHERE experiment = ? AND split = ? ORDER BY task, attempt, id",
            (experiment, split.value),
        ).fetchall()
        return [
            TrialRow(int(r[0]), str(r[1]), int(r[2]), Split(r[3]), TrialStatus(r[4]),
                     None if r[5] is None else float(r[5]), float(r[6]), float(r[7]),
                     Path(r[8]), str(r[9]))
            for r in rows
        ]  # fmt: skip

    def latest(self, experiment: int, split: Split) -> dict[tuple[str, int], TrialRow]:
        return {(row.task, row.attempt): row for row in self.trials(experiment, split)}


def pairing_of(journal: Journal, run: str) -> str | None:
    """The meta proposer and task agent pairing the run's latest start recorded."""
    row = journal.db.execute(
        "SELECT json_extract(detail, '$.pairing') FROM audit WHERE run = ? AND"
        " event = 'run-started' ORDER BY id DESC LIMIT 1",
        (run,),
    ).fetchone()
    return str(row[0]) if row and row[0] is not None else None
