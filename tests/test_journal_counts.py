"""A run's elapsed time (the union of its experiments' overlapping spans) from a kept
partial sum and the spans since: the same answer as folding every span, whatever
overlaps, in-flight experiments and later sessions there are."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from ratchet.journal import Journal, RunRecord
from ratchet.journalcounts import KEEP_AFTER

RUN = "night"
NOW = 1_500_000_000.0  # 2017: the spans below all lie well before the real clock's now

# the union of spans as ratchet computed it before the kept sum: one window over all
WHOLE = (
    "SELECT COALESCE(SUM(MAX(0, ended_at - MAX(started_at, COALESCE(before, 0)))), 0)"
    " FROM (SELECT started_at, ended_at, MAX(ended_at) OVER (ORDER BY started_at, id"
    " ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before"
    " FROM experiments WHERE run = ? AND ended_at IS NOT NULL)"
)


class Clock:
    """The journal's clock, set by the test: experiments start and end when it says."""

    def __init__(self) -> None:
        self.now = NOW - 2 * 10**6

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    import ratchet.journal
    import ratchet.journalcounts

    set_by_test = Clock()
    monkeypatch.setattr(ratchet.journal, "time", set_by_test)
    monkeypatch.setattr(ratchet.journalcounts, "time", set_by_test)
    return set_by_test


def _add(journal: Journal, clock: Clock, rng: random.Random, count: int, start: float) -> None:
    """`count` experiments from `start` on, as 1 to 4 slots leave them: overlapping."""
    at = start
    for _ in range(count):
        at += rng.uniform(0, 20)
        clock.now = at
        experiment = journal.begin_experiment(RUN, 0, "p" * 40, "knobs")
        clock.now = at + rng.uniform(0, 60)
        journal.decide(experiment, "discard", "not better", 1.0)
    clock.now = NOW


def _whole(path: Path) -> float:
    db = sqlite3.connect(path)
    try:
        return float(db.execute(WHOLE, (RUN,)).fetchone()[0])
    finally:
        db.close()


def _kept(path: Path) -> tuple[float, float, float] | None:
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT upto, elapsed, reach FROM spans WHERE run = ?", (RUN,))
        found = row.fetchone()
        return None if found is None else (found[0], found[1], found[2])
    finally:
        db.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_elapsed_time_from_a_kept_sum_is_the_whole_fold(
    tmp_path: Path, clock: Clock, seed: int
) -> None:
    rng = random.Random(seed)
    path = tmp_path / "journal.db"
    journal = Journal(path, verify=True)  # the run's own: it keeps the sum
    journal.create_run(RunRecord(RUN, f"ratchet/{RUN}", "b" * 40, "d", "score", "min", 0))
    flight_start = NOW - 10**6 + 4000  # some 400 experiments in
    clock.now = flight_start
    in_flight = journal.begin_experiment(RUN, 1, "p" * 40, "knobs")  # a slot measuring on
    _add(journal, clock, rng, 3 * KEEP_AFTER, NOW - 10**6)
    assert journal.counts(RUN).elapsed == pytest.approx(_whole(path))
    kept = _kept(path)
    assert kept is not None and kept[0] <= flight_start  # never past one still in flight
    # it ends, later sessions add more, overlapping what was kept: still the whole fold
    clock.now = flight_start + 5000
    journal.decide(in_flight, "discard", "not better", 1.0)
    clock.now = NOW
    assert journal.counts(RUN).elapsed == pytest.approx(_whole(path))
    assert _kept(path) != kept  # moved on past it
    _add(journal, clock, rng, KEEP_AFTER // 2, NOW - 10**5)
    assert journal.counts(RUN).elapsed == pytest.approx(_whole(path))
    journal.close()
    reader = Journal(path)  # a reading command: the same answer, from what is kept
    before = _kept(path)
    _add(reader, clock, rng, 10, NOW - 10**4)
    assert reader.counts(RUN).elapsed == pytest.approx(_whole(path))
    assert _kept(path) == before  # readers only read the kept sum
    reader.close()


def test_a_long_session_keeps_the_sum_as_it_decides(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "journal.db"
    journal = Journal(path, verify=True)
    journal.create_run(RunRecord(RUN, f"ratchet/{RUN}", "b" * 40, "d", "score", "min", 0))
    assert _kept(path) is None
    _add(journal, clock, random.Random(0), 2 * KEEP_AFTER + 1, NOW - 10**6)  # decide() alone
    kept = _kept(path)
    assert kept is not None and kept[1] > 0  # status need not fold the whole session
    journal.close()
