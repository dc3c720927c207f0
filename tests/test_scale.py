"""A long history: what a resume and the reading commands touch is bounded, never the
whole history and never a patch they do not show (timings are in bench/big_journal.py)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_knobs import _proposer, _record

from conftest import GIT_ENV, make_project, ratchet
from ratchet import brief
from ratchet.brief import History
from ratchet.journal import Journal, RunRecord
from ratchet.proposers import Outcome
from ratchet.proposers import knobs as knobs_module
from ratchet.results import export_tsv, tsv_header

RUN = "night"
PATCH = "diff --git a/value.py b/value.py\n" + "+x = 1\n" * 400
LONG = "the loss curve flattened early, so a smaller step may help the last third " * 4


def _fill(journal: Journal, count: int) -> dict[str, list[int]]:
    """A run of `count` decided experiments after its baseline: every 10th a keep."""
    journal.create_run(RunRecord(RUN, f"ratchet/{RUN}", "b" * 40, "d", "score", "minimize", 0))
    ids: dict[str, list[int]] = {"keep": [], "discard": [], "crash": []}
    for i in range(count + 1):
        proposer = "baseline" if i == 0 else "knobs"
        experiment = journal.begin_experiment(RUN, 0, "p" * 40, proposer)
        journal.record_proposal(experiment, f"#{i}: {LONG}", PATCH, ["value.py"],
                                {"params": {"x": i}}, 0.1)  # fmt: skip
        decision = "keep" if i % 10 == 0 else ("crash" if i % 10 == 5 else "discard")
        value = None if decision == "crash" else 100.0 - i / 10
        status = "crash" if decision == "crash" else "ok"
        journal.add_measurement(experiment, 0, status, value, {}, 1.0, "step 1\n" * 50, 0.0)
        journal.decide(experiment, decision, f"{decision}: {LONG}", value,
                       commit=f"{experiment:040x}" if decision == "keep" else None)  # fmt: skip
        ids[decision].append(experiment)
    return ids


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    opened = Journal(tmp_path / ".ratchet" / "journal.db")
    yield opened
    opened.close()


def _columns_read(journal: Journal) -> set[tuple[str, str]]:
    """Every (table, column) the statements prepared from now on read."""
    read: set[tuple[str, str]] = set()

    def authorize(action: int, table: str | None, column: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_READ and table and column:
            read.add((table, column))
        return sqlite3.SQLITE_OK

    journal.db.set_authorizer(authorize)
    return read


def test_a_resume_reads_no_patch_and_a_window_of_the_history(
    journal: Journal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _fill(journal, 300)
    monkeypatch.setattr(brief, "HISTORY_LIMIT", 40)
    monkeypatch.setattr(brief, "EARLIER_LIMIT", 100)
    results = tmp_path / "results.tsv"
    export_tsv(journal, RUN, "score", results)
    read = _columns_read(journal)
    history = History.load(journal, RUN)
    trials = journal.trials(RUN, recent=20, best=5)
    noise_rows = journal.measurement_rows(RUN)
    journal.counts(RUN)
    export_tsv(journal, RUN, "score", results)  # up to date: counted, not rewritten
    assert ("experiments", "patch") not in read
    assert ("measurements", "output") in read  # the tails of the recent failures only ...
    assert len(history.failures) == brief.FAILURE_LIMIT
    # ... and a window of the history: the newest 40 in full, the 100 before them compact
    assert [int(e.split(",")[0][7:]) for e in history.recent] == list(range(262, 302))
    assert [int(e[1:].split(",")[0]) for e in history.earlier] == list(range(162, 262))
    assert len(trials) <= 20 + 5 + 1 and all(r.patch == "" for r in trials)
    assert trials[-1].id == 301 and ids["keep"][-1] in [r.id for r in trials]  # the incumbent
    best = sorted((r for r in trials if r.value is not None), key=lambda r: r.value or 0)
    assert best[0].id == ids["keep"][-1]
    # the noise model's data: the baseline's and the keeps' measurements, not the rest
    assert {row[0] for row in noise_rows} == set(ids["keep"])


def test_results_tsv_is_appended_to_or_rewritten_only_when_behind(
    journal: Journal, tmp_path: Path
) -> None:
    _fill(journal, 30)
    results = tmp_path / "results.tsv"
    export_tsv(journal, RUN, "score", results)  # missing: written whole
    whole = results.read_text()
    assert whole.startswith(tsv_header("score")) and len(whole.splitlines()) == 32
    before = os.stat(results)
    export_tsv(journal, RUN, "score", results)
    after = os.stat(results)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    lines = whole.splitlines(keepends=True)
    results.write_text("".join(lines[:10] + lines[11:]))  # a row lost to a kill
    export_tsv(journal, RUN, "score", results)
    assert os.stat(results).st_ino == before.st_ino  # appended to, not replaced
    assert sorted(results.read_text().splitlines()) == sorted(whole.splitlines())
    results.write_text(tsv_header("loss") + "".join(lines[1:]))  # another metric's file
    export_tsv(journal, RUN, "score", results)
    assert results.read_text() == whole


def test_the_journal_is_read_whole_only_when_not_as_a_run_left_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    first = Journal(path, verify=True)
    assert first.full_check  # never checked before
    _fill(first, 3)
    first.close()
    again = Journal(path, verify=True)
    assert not again.full_check  # as the run left it: the header and schema suffice
    again.close()
    reader = Journal(path)  # not a run: it leaves no mark of a check
    reader.audit(RUN, "approved")
    reader.close()
    after_a_write = Journal(path, verify=True)
    assert after_a_write.full_check
    after_a_write.close()
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # changed from outside
    assert Journal(path, verify=True).full_check


def test_the_knobs_study_is_bounded_and_keeps_the_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(knobs_module, "STUDY_RECENT", 8)
    monkeypatch.setattr(knobs_module, "STUDY_BEST", 3)
    monkeypatch.setattr(knobs_module, "STUDY_LIMIT", 20)
    proposer = _proposer(tmp_path, [_record(1, "keep", 50.0, {})])
    sizes = []
    for i in range(60):
        proposal = proposer.propose(tmp_path, tmp_path / "brief.json")
        value = 1.0 if i == 7 else 10.0 + i  # the best one, early
        proposer.observe(Outcome(i + 2, "discard", value, 50.0, proposal.meta))
        sizes.append(len(proposer.study.trials))
    assert max(sizes) <= 20 and proposer.generation >= 2  # restarted, more than once
    told = [t.value for t in proposer.study.trials if t.value is not None]
    assert 1.0 in told  # the best outcome survives every restart
    assert 10.0 + 59 in told  # and so do the newest ones


# the command line ------------------------------------------------------------------------
@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = make_project(tmp_path / "project", {"value.py": "X = 1\n"})
    filled = Journal(root / ".ratchet" / "journal.db")
    _fill(filled, 12)
    filled.close()
    return root


HEAVY = ("optuna", "openai", "numpy", "pygit2", "rich.live", "scipy")


@pytest.mark.parametrize("args", [["--help"], ["status"], ["log", "--limit", "5"]])
def test_reading_commands_import_no_heavy_library(project: Path, args: list[str]) -> None:
    code = (
        "import sys\nfrom ratchet.cli import main\n"
        f"sys.argv = ['ratchet', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True,
                          text=True, env={**os.environ, **GIT_ENV})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stderr, done.stderr


def test_output_that_is_not_a_terminal_is_not_wrapped_or_coloured(project: Path) -> None:
    env = {"NO_COLOR": "", "FORCE_COLOR": "", "COLUMNS": "40", "TERM": "xterm-256color"}
    for args in (["log"], ["review"]):
        done = ratchet(project, *args, env=env)
        assert done.returncode == 0, done.stderr
        assert "\x1b[" not in done.stdout
        whole = [line for line in done.stdout.splitlines() if LONG.strip() in line]
        assert whole, done.stdout  # a why or rationale of ~300 characters on one line
    coloured = ratchet(project, "log", env={"FORCE_COLOR": "1"})
    assert "\x1b[" in coloured.stdout  # asked for: colours, still not wrapped
    assert any(LONG.strip() in line for line in coloured.stdout.splitlines())
