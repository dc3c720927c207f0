"""Harness mode's second figure: pass/fail per task on the search split across the keeps,
read from the journal's trials table (never the holdout's)."""

from __future__ import annotations

from pathlib import Path

from test_scale import RUN, _fill

from ratchet.journal import Journal
from ratchet.report import plot_task_results, task_results
from ratchet.suite.store import TrialStore
from ratchet.suite.trials import Split, TrialResult, TrialStatus, TrialUsage


def _trial(task: str, attempt: int, status: TrialStatus) -> TrialResult:
    reward = {TrialStatus.PASSED: 1.0, TrialStatus.FAILED: 0.0}.get(status)
    return TrialResult(task, attempt, status, reward, {}, 1.0, TrialUsage())


def test_a_metric_run_has_no_task_figure(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    _fill(journal, 12)
    assert task_results(journal, RUN) is None


def test_tasks_across_the_keeps_from_the_search_split_only(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    ids = _fill(journal, 12)  # keeps: the baseline, #10
    baseline, later = ids["keep"]
    store = TrialStore(journal)
    folder = tmp_path / "trials"
    store.record(RUN, baseline, baseline, Split.SEARCH, [
        (_trial("alpha", 0, TrialStatus.FAILED), folder / "a0"),
        (_trial("beta", 0, TrialStatus.PASSED), folder / "b0"),
        (_trial("gamma", 0, TrialStatus.ERROR), folder / "g0"),
    ])  # fmt: skip
    store.record(RUN, later, later, Split.SEARCH, [
        (_trial("alpha", 0, TrialStatus.PASSED), folder / "a1"),
        (_trial("beta", 0, TrialStatus.PASSED), folder / "b1"),
        (_trial("beta", 1, TrialStatus.FAILED), folder / "b2"),
    ])  # fmt: skip
    store.record(RUN, later, later, Split.HOLDOUT, [
        (_trial("sealed", 0, TrialStatus.PASSED), folder / "s1"),
    ])  # fmt: skip
    found = task_results(journal, RUN)
    assert found is not None
    tasks, keeps = found
    assert keeps == [baseline, later]
    assert tasks == {"alpha": [False, True], "beta": [True, False]}  # gamma never settled
    png = plot_task_results(tasks, keeps, tmp_path / "tasks.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
