"""A run's counts, kept up to date as the journal grows, not recounted per request.

`Journal.counts` reads the whole run (the union of its experiments' spans, its
decisions): a second on 100,000 experiments, too slow for a page that updates every
second. A decided experiment never changes its decision, cost or span again, so a
tally folds the run's decided experiments once, in id order, up to the first one still
in flight (the frontier), and afterwards reads only the rows from the frontier on,
through the summary index. The counts are `Journal.counts`' and `user_counts`': the
baseline's attempts are no experiments, interruptions are not counted, the elapsed
time is the union of the spans (parallel slots overlap).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ratchet.decisions import BASELINE_PROPOSER, by_category
from ratchet.journal import Journal

Row = tuple[int, str | None, str, float, float, float | None]


@dataclass
class _Sums:
    """Sums over experiments in id order (the order the run started them in)."""

    decisions: Counter[str] = field(default_factory=Counter)  # the baseline's left out
    rows: Counter[str] = field(default_factory=Counter)  # every decided row, by decision
    undecided: int = 0  # rows in flight
    cost_usd: float = 0.0
    elapsed: float = 0.0
    latest_end: float = 0.0
    since_keep: int = 0

    def add(self, row: Row) -> None:
        _, decision, proposer, cost, started, ended = row
        if decision is None:
            self.undecided += 1
        else:
            self.rows[decision] += 1
            self.cost_usd += cost or 0.0
        if ended is not None:  # each span counts past the latest end before it
            self.elapsed += max(0.0, ended - max(started, self.latest_end))
            self.latest_end = max(self.latest_end, ended)
        if decision is None or proposer == BASELINE_PROPOSER:
            if decision == "keep":
                self.since_keep = 0
            return
        self.decisions[decision] += 1
        if decision == "keep":
            self.since_keep = 0
        elif decision != "interrupted":
            self.since_keep += 1

    def copy(self) -> _Sums:
        return _Sums(Counter(self.decisions), Counter(self.rows), self.undecided, self.cost_usd,
                     self.elapsed, self.latest_end, self.since_keep)  # fmt: skip


class Tally:
    """One run's counts; `read` brings them up to date and answers them."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.frontier = 0  # every experiment below this id is decided and folded in
        self.folded = _Sums()
        self.latest = self.folded  # the sums as the last `read` left them
        self.lock = threading.Lock()

    def _fold_in_sql(self, journal: Journal) -> None:
        """The first fold: aggregates in SQLite (indexed), not rows into Python."""
        run = self.run
        first_open, last = journal.db.execute(
            "SELECT MIN(CASE WHEN decision IS NULL THEN id END), MAX(id) FROM experiments"
            " WHERE run = ?",
            (run,),
        ).fetchone()
        frontier = first_open if first_open is not None else (last or 0) + 1
        sums = self.folded
        for decision, count, every, cost in journal.db.execute(
            "SELECT decision, COUNT(*) FILTER (WHERE proposer != ?), COUNT(*), SUM(cost_usd)"
            " FROM experiments WHERE run = ? AND id < ? GROUP BY decision",
            (BASELINE_PROPOSER, run, frontier),
        ):
            if count:
                sums.decisions[decision] += count
            sums.rows[decision] += every
            sums.cost_usd += cost or 0.0
        # the union of the spans, as `Journal.counts` takes it
        sums.elapsed, sums.latest_end = journal.db.execute(
            "SELECT COALESCE(SUM(MAX(0, ended_at - MAX(started_at, COALESCE(before, 0)))), 0),"
            " COALESCE(MAX(ended_at), 0) FROM (SELECT started_at, ended_at, MAX(ended_at) OVER"
            " (ORDER BY started_at, id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"
            " AS before FROM experiments WHERE run = ? AND id < ? AND ended_at IS NOT NULL)",
            (run, frontier),
        ).fetchone()
        last_keep = journal.db.execute(
            "SELECT COALESCE(MAX(id), 0) FROM experiments WHERE run = ? AND decision = 'keep'"
            " AND id < ?",
            (run, frontier),
        ).fetchone()[0]
        sums.since_keep = journal.db.execute(
            "SELECT COUNT(*) FROM experiments WHERE run = ? AND id > ? AND id < ?"
            " AND decision != 'interrupted'",
            (run, last_keep, frontier),
        ).fetchone()[0]
        self.frontier = frontier

    def read(self, journal: Journal) -> dict[str, Any]:
        with self.lock:
            if self.frontier == 0:
                self._fold_in_sql(journal)
            rows: list[Row] = journal.db.execute(
                "SELECT id, decision, proposer, cost_usd, started_at, ended_at FROM experiments"
                " WHERE run = ? AND id >= ? ORDER BY id",
                (self.run, self.frontier),
            ).fetchall()
            now = None
            for row in rows:
                if now is None and row[1] is None:  # the first one in flight: fold no further
                    now = self.folded.copy()
                if now is None:
                    self.folded.add(row)
                    self.frontier = row[0] + 1
                else:
                    now.add(row)
            sums = now or self.folded
            self.latest = sums
            decisions = {d: n for d, n in sorted(sums.decisions.items())}
            interrupted = decisions.get("interrupted", 0)
            return {
                "experiments": sum(decisions.values()) - interrupted,
                "keeps": decisions.get("keep", 0),
                "since_keep": sums.since_keep,
                "elapsed_seconds": round(sums.elapsed, 3),
                "cost_usd": sums.cost_usd,
                "decisions": decisions,
                "categories": by_category(decisions.items()),
            }

    def rows(self, journal: Journal, decisions: list[str] | None) -> int:
        """How many of the run's experiments have one of `decisions` (None: every
        experiment, the baseline and those in flight included), without counting rows."""
        self.read(journal)  # up to date
        with self.lock:
            sums = self.latest
            if decisions is None:
                return sum(sums.rows.values()) + sums.undecided
            return sum(sums.rows.get(d, 0) for d in decisions)


class Tallies:
    """A tally per run, for the app's lifetime."""

    def __init__(self) -> None:
        self.runs: dict[str, Tally] = {}
        self.lock = threading.Lock()

    def of(self, run: str) -> Tally:
        with self.lock:
            return self.runs.setdefault(run, Tally(run))
