"""Decisions are one typed enum with categories, and every view and export reads them
from it: `overfit` is a `discard` in results.tsv, the baseline is no keep in any count."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import experiments, ratchet
from holdout_support import holdout_project
from ratchet.decisions import NO_MEASUREMENT, Category, Decision, user_counts
from ratchet.engine import open_journal
from ratchet.view import decision_style

STEP = (
    f"{sys.executable} -c \"import re; t = open('value.py').read(); "
    "x = int(re.search(r'X = (-?\\d+)', t).group(1)); "
    "open('value.py', 'w').write(f'X = {x - 1}\\n')\""
)


def test_the_stored_strings_are_the_journal_s_as_before() -> None:
    """Old journals read: each decision is stored as the string it always was."""
    assert [d.value for d in Decision] == [
        "keep", "discard", "overfit", "stale", "crash", "timeout", "no-metric", "not-finite",
        "tampered", "no-change", "duplicate", "out-of-scope", "invalid-proposal", "interrupted",
    ]  # fmt: skip
    assert Decision("overfit") is Decision.OVERFIT and Decision.KEEP == "keep"
    assert json.dumps([Decision.NO_CHANGE]) == '["no-change"]'


def test_each_decision_has_one_category_and_the_views_follow_it() -> None:
    categories = {d: d.category for d in Decision}
    assert {d for d, c in categories.items() if c is Category.KEPT} == {Decision.KEEP}
    assert {d for d, c in categories.items() if c is Category.REJECTED} == {
        Decision.DISCARD, Decision.OVERFIT, Decision.STALE,
    }  # fmt: skip
    assert {d for d, c in categories.items() if c is Category.FAILED} == {
        Decision.CRASH, Decision.TIMEOUT, Decision.NO_METRIC, Decision.NOT_FINITE,
        Decision.TAMPERED,
    }  # fmt: skip
    assert categories[Decision.INTERRUPTED] is Category.INTERRUPTED
    # one style per category, in the live view, `log` and `show` alike
    assert decision_style("overfit") == decision_style("discard") == decision_style("stale")
    assert decision_style("keep") != decision_style("discard") != decision_style("crash")
    # results.tsv's three words: everything measured and not kept is a discard
    assert {d.value: d.tsv_status for d in Decision if d.category is Category.REJECTED} == {
        "discard": "discard", "overfit": "discard", "stale": "discard",
    }  # fmt: skip
    assert Decision.TIMEOUT.tsv_status == "crash" and Decision.KEEP.tsv_status == "keep"
    # what gives up a run: no usable measurement (an empty change is no failure)
    assert Decision.NO_CHANGE not in NO_MEASUREMENT and Decision.DUPLICATE in NO_MEASUREMENT
    assert Decision.DISCARD not in NO_MEASUREMENT and Decision.INTERRUPTED not in NO_MEASUREMENT


def test_user_counts_leave_the_baseline_out() -> None:
    by_decision, by_category = user_counts(
        {"keep": 6, "discard": 2, "crash": 1}, {"keep": 1, "crash": 1}
    )
    assert by_decision == {"keep": 5, "discard": 2}
    assert by_category == {"kept": 5, "rejected": 2}


def test_overfit_is_a_discard_in_results_tsv(tmp_path: Path) -> None:
    """The search metric improves (X 5 -> 3) but the holdout, best at 6, gets worse."""
    project = holdout_project(tmp_path / "p", best=6)
    assert ratchet(project, "run").returncode == 0
    assert [r["decision"] for r in experiments(project)] == ["keep", "overfit"]
    with open(project / ".ratchet" / "results.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [(r["decision"], r["status"]) for r in rows] == [
        ("keep", "keep"),
        ("overfit", "discard"),
    ]
    # the journal's records carry the enum
    journal = open_journal(project)
    try:
        records = journal.experiments("default")
    finally:
        journal.close()
    assert records[1].decision is Decision.OVERFIT and records[0].is_baseline
    status = json.loads(ratchet(project, "status", "--json").stdout)
    assert status["decisions"] == {"overfit": 1} and status["keeps"] == 0
    assert status["categories"] == {"rejected": 1}


def test_status_never_counts_the_baseline_as_a_keep(score_project: Callable[..., Path]) -> None:
    project = score_project(STEP, max_experiments=3)
    assert ratchet(project, "run").returncode == 0
    assert [r["decision"] for r in experiments(project)] == ["keep"] * 4  # the baseline too
    status = json.loads(ratchet(project, "status", "--json").stdout)
    assert status["keeps"] == 3 and status["experiments"] == 3
    assert status["decisions"] == {"keep": 3} and status["categories"] == {"kept": 3}
    text = ratchet(project, "status").stdout
    assert "3 keeps" in text and "keep 3" in text and "keep 4" not in text
    assert "kept 3" in text
