"""The brief: the whole history, recent experiments in full and older ones compact."""

from __future__ import annotations

import json
from pathlib import Path

from ratchet.brief import EARLIER_RATIONALE, HISTORY_LIMIT, History, fit_brief
from ratchet.journal import Journal


def journal_with(path: Path, n: int) -> Journal:
    """A real journal holding `n` decided experiments of run `r`."""
    journal = Journal(path / "journal.db")
    for i in range(n):
        experiment = journal.begin_experiment("r", 0, "0" * 40, "command")
        journal.record_proposal(experiment, f"idea {i}: " + "z" * 300, "", ["value.py"], {}, 0.1)
        journal.decide(experiment, "discard", f"why {i}", float(i), {}, None, 0.1)
    return journal


def test_older_experiments_stay_in_the_brief_compact(tmp_path: Path) -> None:
    journal = journal_with(tmp_path, HISTORY_LIMIT + 30)
    history = History.load(journal, "r")
    recent = [json.loads(entry) for entry in history.recent]
    earlier = [json.loads(entry) for entry in history.earlier]
    assert len(recent) == HISTORY_LIMIT and len(earlier) == 30
    assert recent[0]["id"] == 31 and recent[-1]["why"] == f"why {HISTORY_LIMIT + 29}"
    assert earlier[0][:2] == [1, "discard"]
    assert earlier[0][2].startswith("idea 0: ") and len(earlier[0][2]) == EARLIER_RATIONALE
    # adding one more moves the oldest recent experiment into the compact part
    record = journal.experiments("r", limit=1)[0]
    history.add(record, "")
    assert len(history.recent) == HISTORY_LIMIT and len(history.earlier) == 31
    journal.close()


def test_fit_brief_drops_the_oldest_compact_entries_first() -> None:
    brief = {
        "run": "r",
        "earlier": [[i, "discard", "y" * 100] for i in range(300)],
        "history": [{"id": 1000 + i, "why": "x" * 500} for i in range(60)],
        "recent_failures": [],
    }
    text = fit_brief(brief, 40_000)
    assert len(text) <= 40_000
    fitted = json.loads(text)
    assert len(fitted["history"]) == 60  # the full recent entries all stayed
    assert fitted["earlier"] and fitted["earlier"][-1][0] == 299 and fitted["earlier"][0][0] > 0
    small = json.loads(fit_brief(brief, 10_000))
    assert small["earlier"] == [] and small["history"][-1]["id"] == 1059
    assert len(small["history"]) < 60
