"""What views read of a run: the progress series, pages of experiments, the slots in
flight, the noise, each keep's review state. Read-only queries over the journal, each
through an index, so that a journal of 100,000 experiments answers as quickly as a new
one; the report (`report.py`) and the dashboard (`dashboard/`) share them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ratchet.decisions import BASELINE_PROPOSER, Category, Decision
from ratchet.errors import UsageError
from ratchet.journal import JOURNAL_FILE, Journal
from ratchet.journalrecords import ExperimentRecord

STATE_DIR = ".ratchet"
PAGE_MAX = 500  # rows one page may hold
POINTS_MAX = 20_000  # progress points one answer may hold
LABEL_CHARS = 60  # of a keep's rationale, as a label
CATEGORY = {d.value: d.category.value for d in Decision}  # looked up once per point


@contextmanager
def reading(root: Path) -> Iterator[Journal]:
    """The project's journal, opened read-only for as long as the block runs: a reader
    kept open would stop a run from checkpointing its journal whole."""
    path = root / STATE_DIR / JOURNAL_FILE
    if not path.exists():
        raise UsageError("no runs yet in this project; start one with 'ratchet run'")
    journal = Journal.read_only(path)
    try:
        yield journal
    finally:
        journal.db.close()


def run_name(journal: Journal, name: str | None) -> str:
    """`name`, checked, or else the newest run."""
    runs = journal.runs()
    if name is None:
        if not runs:
            raise UsageError("no runs yet in this project; start one with 'ratchet run'")
        return runs[-1].name
    if journal.run(name) is None:
        known = ", ".join(r.name for r in runs) or "none"
        raise UsageError(f"no run named '{name}' (runs: {known})")
    return name


def short_label(text: str, limit: int = LABEL_CHARS) -> str:
    """A rationale's first line, printable characters only, at most `limit` of them."""
    line = next((part for part in text.splitlines() if part.strip()), "")
    line = "".join(c if c.isprintable() else " " for c in line).strip()
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class Point:
    """One decided experiment on the progress chart."""

    id: int
    decision: str
    category: str
    value: float | None
    baseline: bool


def points(journal: Journal, run: str, after: int = 0, limit: int = POINTS_MAX) -> list[Point]:
    """The run's decided experiments after id `after`, oldest first, read from the
    summary index alone (no patch, no rationale)."""
    rows = journal.db.execute(
        "SELECT id, decision, value, proposer FROM experiments WHERE run = ? AND id > ?"
        " AND decision IS NOT NULL ORDER BY id LIMIT ?",
        (run, after, limit),
    )
    out = []
    for id_, decision, value, proposer in rows:
        finite = value if value is not None and math.isfinite(value) else None
        out.append(Point(id_, decision, CATEGORY[decision], finite, proposer == BASELINE_PROPOSER))
    return out


def point_rows(journal: Journal, run: str, after: int = 0, limit: int = POINTS_MAX
               ) -> list[tuple[int, str, float | None, int]]:  # fmt: skip
    """`points` as rows `(id, decision, value, baseline 0 or 1)`, straight from SQLite:
    what the dashboard sends, page after page, for a long run's chart. A value that is
    not finite is None."""
    cursor = journal.db.cursor()
    cursor.row_factory = None  # plain tuples, as json encodes them
    return cursor.execute(
        "SELECT id, decision, CASE WHEN abs(value) <= 1.7976931348623157e308 THEN value END,"
        " proposer = ? FROM experiments WHERE run = ? AND id > ? AND decision IS NOT NULL"
        " ORDER BY id LIMIT ?",
        (BASELINE_PROPOSER, run, after, limit),
    ).fetchall()


def decisions_of(category: str | None, decision: str | None) -> list[str] | None:
    """The decisions a filter lets through (None: all); a name that is neither a
    decision nor a category is a usage error."""
    if decision:
        try:
            return [Decision(decision).value]
        except ValueError:
            raise UsageError(f"no decision '{decision}'") from None
    if category:
        chosen = [d.value for d in Decision if d.category.value == category]
        if not chosen:
            names = ", ".join(c.value for c in Category)
            raise UsageError(f"no category '{category}' (categories: {names})")
        return chosen
    return None


@dataclass(frozen=True)
class Page:
    records: list[ExperimentRecord]
    total: int  # experiments the filter lets through, all pages together
    offset: int
    limit: int


def page(
    journal: Journal,
    run: str,
    offset: int = 0,
    limit: int = 50,
    decisions: list[str] | None = None,
    before: int | None = None,
    total: int | None = None,
) -> Page:
    """One page of the run's experiments, newest first, without patches; `decisions`
    filters (the experiments in flight are left out by any filter); `before` starts
    below that id (a page's last: the next page without an offset to skip). `total`,
    when the caller knows it, saves counting the rows."""
    limit = max(1, min(limit, PAGE_MAX))
    offset = max(0, offset)
    where, args = "run = ?", list[Any]([run])
    if decisions is not None:
        where += f" AND decision IN ({', '.join('?' * len(decisions))})"
        args += decisions
    if total is None:
        found = journal.db.execute(f"SELECT COUNT(*) FROM experiments WHERE {where}", args)
        total = int(found.fetchone()[0])
    if before is not None:
        where += " AND id < ?"
        args.append(before)
    # ids first, from an index; then those rows alone, whole but for the patch
    ids = [row[0] for row in journal.db.execute(
        f"SELECT id FROM experiments WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?",
        [*args, limit, offset])]  # fmt: skip
    records = _records(journal, ids)
    return Page(records, total, offset, limit)


def _records(journal: Journal, ids: list[int]) -> list[ExperimentRecord]:
    if not ids:
        return []
    rows = journal.db.execute(
        f"SELECT * FROM experiments WHERE id IN ({', '.join('?' * len(ids))}) ORDER BY id DESC",
        ids,
    ).fetchall()
    return [_without_patch(ExperimentRecord.from_row(row)) for row in rows]


def _without_patch(record: ExperimentRecord) -> ExperimentRecord:
    from dataclasses import replace

    return replace(record, patch="")


def in_flight(journal: Journal, run: str) -> list[ExperimentRecord]:
    """The run's experiments not decided yet (one per busy slot), by slot."""
    ids = [row[0] for row in journal.db.execute(
        "SELECT id FROM experiments WHERE run = ? AND decision IS NULL ORDER BY id", (run,))]  # fmt: skip
    return sorted(_records(journal, ids), key=lambda r: r.slot)


def keeps(journal: Journal, run: str) -> list[ExperimentRecord]:
    """The run's keeps after its baseline, oldest first, without patches."""
    # the decision index alone (asking for the proposer too would scan the run's rows)
    ids = [row[0] for row in journal.db.execute(
        "SELECT id FROM experiments WHERE run = ? AND decision = 'keep' ORDER BY id", (run,))]  # fmt: skip
    found = [r for r in _records(journal, ids) if not r.is_baseline]
    return sorted(found, key=lambda r: r.id)


def review_states(journal: Journal, run: str) -> dict[int, tuple[str, str]]:
    """Each reviewed keep's latest verdict and note (a keep not in it is pending). Read
    without `approvals.ensure_schema`, which would write: no table, no reviews."""
    found = journal.db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'approvals'"
    ).fetchone()
    if found is None:
        return {}
    rows = journal.db.execute(
        "SELECT a.experiment, a.verdict, a.note FROM approvals a JOIN experiments e"
        " ON e.id = a.experiment WHERE e.run = ? ORDER BY a.id",
        (run,),
    )
    return {row[0]: (row[1], row[2]) for row in rows}


def costs(journal: Journal, run: str) -> tuple[int, float]:
    """The run's proposer tokens and seconds, all experiments together."""
    tokens, seconds = journal.db.execute(
        "SELECT COALESCE(SUM(cost_tokens), 0), COALESCE(SUM(cost_seconds), 0) FROM experiments"
        " WHERE run = ?",
        (run,),
    ).fetchone()
    return int(tokens), float(seconds)


def confirmations(journal: Journal, ids: list[int]) -> dict[int, int]:
    """How many confirming measurements (`confirm`) each experiment had."""
    if not ids:
        return {}
    rows = journal.db.execute(
        "SELECT experiment, COUNT(*) FROM measurements WHERE experiment IN"
        f" ({', '.join('?' * len(ids))}) AND status = 'confirm' GROUP BY experiment",
        ids,
    )
    return {row[0]: row[1] for row in rows}


@dataclass(frozen=True)
class NoiseFigures:
    sd: float | None  # of one measurement, pooled over the run's repeated measurements
    df: int
    smallest_detectable: float | None  # the smallest improvement a keep can prove


def noise(
    journal: Journal, run: str, confidence: float, min_delta: float, max_repeats: int,
    paired: bool = False,
) -> NoiseFigures:  # fmt: skip
    """The run's noise as its judge estimates it (`noise_model.noise_from_rows`)."""
    from ratchet.noise_model import noise_from_rows
    from ratchet.policy import NoiseAware

    baseline = journal.baseline(run)
    rows = journal.measurement_rows(run)
    model = noise_from_rows(rows, baseline.id if baseline else None, paired)
    estimate = model.estimate
    smallest = NoiseAware(confidence, min_delta, max_repeats).smallest_detectable(estimate)
    return NoiseFigures(estimate.sd, estimate.df, None if math.isinf(smallest) else smallest)
