"""A run's totals from the journal (`Journal.counts`), at a cost that does not grow with
its history: counts come from covering indexes, and the run's elapsed time from a kept
partial sum.

The elapsed time is the union of the experiments' spans (parallel slots overlap): in
start order, each span counts only past the latest end of those that started before it.
Folding 100,000 spans costs a reading command a tenth of a second, so the fold's state
is kept in the `spans` table up to a start time before which every experiment has ended,
and only the spans since are folded. A run (the journal's one writer) moves that state
on; readers only read it. The fold is idempotent (a span folded twice adds nothing), so
the kept state may lag behind without changing the answer.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field

from ratchet.decisions import BASELINE_PROPOSER, NO_MEASUREMENT

SPANS_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    run TEXT PRIMARY KEY,
    upto REAL NOT NULL,
    elapsed REAL NOT NULL,
    reach REAL NOT NULL
);
"""
CLOCK_SLACK = 60.0  # s: the kept state stays this far behind now (a clock set back a bit)
KEEP_AFTER = 200  # spans folded past the kept state before a run moves it on
_FIRST = -1e308  # before every start time


@dataclass(frozen=True)
class RunCounts:
    experiments: int  # decided experiments, the baseline and interruptions not counted
    keeps: int  # keeps after the baseline
    since_keep: int  # decided experiments after the last keep
    elapsed: float  # wall seconds spent in experiments, all sessions together
    cost_usd: float
    failing: int = 0  # experiments in a row, up to now, that produced no measurement
    # every decided row by decision, and the baseline's attempts among them: what `status`
    # shows, counted in the same pass
    decisions: dict[str, int] = field(default_factory=dict)
    baseline_decisions: dict[str, int] = field(default_factory=dict)


def run_counts(db: sqlite3.Connection, run: str, keep_state: bool) -> RunCounts:
    decisions, baseline = decision_counts(db, run), baseline_decision_counts(db, run)
    search = {d: n - baseline.get(d, 0) for d, n in decisions.items()}  # the baseline's left out
    cost = db.execute(
        "SELECT COALESCE(SUM(cost_usd), 0) FROM experiments WHERE run = ? AND decision IS NOT NULL",
        (run,),
    ).fetchone()[0]
    last_keep = db.execute(
        "SELECT COALESCE(MAX(id), 0) FROM experiments WHERE run = ? AND decision = 'keep'",
        (run,),
    ).fetchone()[0]
    since = db.execute(
        "SELECT COUNT(*) FROM experiments WHERE run = ? AND id > ? AND decision IS NOT NULL"
        " AND decision != 'interrupted'",
        (run, last_keep),
    ).fetchone()[0]
    failing = 0
    for (decision,) in db.execute(
        "SELECT decision FROM experiments WHERE run = ? AND decision IS NOT NULL"
        " AND decision != 'interrupted' ORDER BY id DESC LIMIT 1000",
        (run,),
    ):
        if decision not in NO_MEASUREMENT:
            break
        failing += 1
    experiments = sum(search.values()) - search.get("interrupted", 0)
    return RunCounts(experiments, search.get("keep", 0), since, elapsed(db, run, keep_state),
                     cost, failing, decisions, baseline)  # fmt: skip


def decision_counts(db: sqlite3.Connection, run: str) -> dict[str, int]:
    """Every decided row of the run by decision, the baseline's attempts included: one pass
    over the covering (run, decision, id) index."""
    rows = db.execute(
        "SELECT decision, COUNT(*) FROM experiments WHERE run = ? AND decision IS NOT NULL"
        " GROUP BY decision",
        (run,),
    ).fetchall()
    return {row[0]: row[1] for row in rows}


def baseline_decision_counts(db: sqlite3.Connection, run: str) -> dict[str, int]:
    """The decisions of the run's baseline attempts: no experiments of the search."""
    # through the proposer's index: the few baseline rows, not every decided one's
    rows = db.execute(
        "SELECT decision, COUNT(*) FROM experiments INDEXED BY experiments_by_proposer"
        " WHERE run = ? AND proposer = ? AND decision IS NOT NULL GROUP BY decision",
        (run, BASELINE_PROPOSER),
    ).fetchall()
    return {row[0]: row[1] for row in rows}


def elapsed(db: sqlite3.Connection, run: str, keep_state: bool) -> float:
    """The union of the run's experiments' spans, in seconds. With `keep_state` (the
    run's own journal), the fold's state is kept for the next reader when it moved far."""
    kept = db.execute("SELECT upto, elapsed, reach FROM spans WHERE run = ?", (run,)).fetchone()
    upto, total, reach = kept if kept else (_FIRST, 0.0, 0.0)
    state, folded, blocked = None, 0, False
    settled = time.time() - CLOCK_SLACK  # later starts may still be joined by others
    for start, end in db.execute(
        "SELECT started_at, ended_at FROM experiments WHERE run = ? AND started_at >= ?"
        " ORDER BY started_at, id",
        (run, upto),
    ):
        if not blocked and start <= settled:
            state, folded = (start, total, reach), folded + 1  # all before it have ended
        if end is None:  # in flight (or its run died): the kept state stops before it
            blocked = True
            continue
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    if keep_state and state is not None and folded >= KEEP_AFTER:
        db.execute("INSERT OR REPLACE INTO spans (run, upto, elapsed, reach) VALUES (?, ?, ?, ?)",
                   (run, *state))  # fmt: skip
    return float(total)
