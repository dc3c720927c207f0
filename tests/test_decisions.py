"""Every decision kind, produced by a real proposer and candidate in a real repository."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import experiments, git, ratchet


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for a parent that never reaps it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def last(project: Path) -> dict[str, object]:
    return experiments(project)[-1]


def test_a_strict_improvement_is_kept_as_one_commit_on_the_run_branch(
    score_project: Callable[..., Path],
) -> None:
    project = score_project(
        "sed -i.bak 's/X = 5/X = 2/' value.py && rm value.py.bak && echo move X to 2"
    )
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    row = last(project)
    assert row["decision"] == "keep"
    assert row["why"] == (
        "kept: score 9 -> 0 (delta 9; deterministic: every repeated measurement so far agreed "
        "exactly (3 of them), and a second measurement gave the same)"
    )
    assert git(project, "rev-parse", "ratchet/default") == row["commit_sha"]
    message = git(project, "log", "-1", "--format=%B", "ratchet/default")
    assert message.splitlines()[0] == "score 9 -> 0: move X to 2"
    assert "score 9 -> 0" in message and "move X to 2" in message
    assert git(project, "rev-list", "--count", "main..ratchet/default") == "1"
    assert git(project, "show", "ratchet/default:value.py") == "X = 2"
    # the user's branch and working tree are untouched
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert (project / "value.py").read_text() == "X = 5\n"
    assert git(project, "status", "--porcelain") == ""


def test_a_worse_candidate_is_discarded_and_the_branch_stays(
    score_project: Callable[..., Path],
) -> None:
    project = score_project("echo 'X = 9' > value.py")
    ratchet(project, "run")
    row = last(project)
    assert row["decision"] == "discard"
    assert row["why"] == (
        "discarded: score 9 -> 49 is worse by 40 (deterministic: every repeated measurement "
        "so far agreed exactly (3 of them))"
    )
    assert row["patch"].count("+X = 9") == 1  # the discarded diff is kept in the journal
    assert git(project, "rev-parse", "ratchet/default") == git(project, "rev-parse", "main")


def test_a_tie_is_not_a_keep(score_project: Callable[..., Path]) -> None:
    project = score_project("echo 'X = -1' > value.py")
    ratchet(project, "run")
    assert last(project)["decision"] == "discard"
    assert "tie" in str(last(project)["why"])


def test_a_candidate_that_raises_is_a_crash_with_its_last_line(
    score_project: Callable[..., Path],
) -> None:
    project = score_project("echo 'X = 1 / 0' > value.py")
    result = ratchet(project, "run")
    assert result.returncode == 0
    row = last(project)
    assert row["decision"] == "crash"
    assert "exited with code 1" in str(row["why"])
    assert "ZeroDivisionError" in str(row["why"])


def test_a_candidate_past_its_budget_is_killed_with_its_whole_group(
    score_project: Callable[..., Path], tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    hang = f"""
import signal, subprocess, time
child = subprocess.Popen(["sh", "-c", "trap '' TERM; echo $$ > {pidfile}; sleep 60"])
signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(60)
X = 1
"""
    propose_file = tmp_path / "hang.py"
    propose_file.write_text(hang)
    project = score_project(f"cp {propose_file} value.py", budget="1s")
    started = time.monotonic()
    ratchet(project, "run")
    assert time.monotonic() - started < 30
    row = last(project)
    assert row["decision"] == "timeout"
    assert row["why"] == "the command ran past its 1s budget and was killed"
    assert not alive(int(pidfile.read_text()))


def test_a_candidate_that_prints_no_metric(score_project: Callable[..., Path]) -> None:
    project = score_project("printf 'import os\\nos._exit(0)\\n' > value.py")
    ratchet(project, "run")
    assert last(project)["decision"] == "no-metric"
    assert last(project)["why"] == "the output has no 'score'"


def test_a_nan_metric_is_not_finite(score_project: Callable[..., Path]) -> None:
    project = score_project("echo 'X = float(\"nan\")' > value.py")
    ratchet(project, "run")
    assert last(project)["decision"] == "not-finite"
    assert "nan" in str(last(project)["why"])


def test_a_proposal_that_changes_nothing(score_project: Callable[..., Path]) -> None:
    project = score_project("true")
    ratchet(project, "run")
    assert last(project)["decision"] == "no-change"


@pytest.mark.parametrize(
    ("propose", "named"),
    [
        ("echo 'print(\"score: -1\")' > score.py", "score.py"),  # edits the evaluator
        ("git mv value.py renamed.py", "renamed.py"),  # a rename out of the scope
        ("rm score.py", "score.py"),  # a deletion
        ("echo 'X = 2' > value.py && echo hi > new.txt", "new.txt"),  # in scope plus one more
    ],
)
def test_a_change_outside_the_editable_scope_is_rejected_whole(
    score_project: Callable[..., Path], propose: str, named: str
) -> None:
    project = score_project(propose)
    ratchet(project, "run")
    row = last(project)
    assert row["decision"] == "out-of-scope"
    assert named in str(row["why"])
    assert git(project, "rev-parse", "ratchet/default") == git(project, "rev-parse", "main")
    assert row["value"] is None  # it was never measured


def test_a_failing_proposer_is_an_invalid_proposal_and_the_loop_goes_on(
    score_project: Callable[..., Path],
) -> None:
    project = score_project("echo 'model refused' && exit 3", max_experiments=2)
    result = ratchet(project, "run")
    assert result.returncode == 0
    rows = experiments(project)
    assert [r["decision"] for r in rows] == ["keep", "invalid-proposal", "invalid-proposal"]
    assert rows[-1]["why"] == "the proposer exited with code 3: model refused"


def test_the_loop_goes_on_after_every_kind_of_failure(
    score_project: Callable[..., Path], tmp_path: Path
) -> None:
    counter, script = tmp_path / "counter", tmp_path / "propose.sh"
    script.write_text(
        f"n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}\n"
        "case $n in\n"
        "  0) echo 'X = 1 / 0' > value.py;;\n"
        "  1) echo 'X = float(\"nan\")' > value.py;;\n"
        "  2) true;;\n"
        "  3) echo x > other.txt;;\n"
        "  4) exit 2;;\n"
        "  *) echo 'X = 3' > value.py;;\n"
        "esac\n"
    )
    project = score_project(f"sh {script}", max_experiments=6)
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    assert [r["decision"] for r in experiments(project)] == [
        "keep",
        "crash",
        "not-finite",
        "no-change",
        "out-of-scope",
        "invalid-proposal",
        "keep",
    ]


def test_the_greedy_policy_keeps_any_strict_improvement_of_one_measurement(
    score_project: Callable[..., Path],
) -> None:
    project = score_project("echo 'X = 1' > value.py")
    spec = (
        (project / "ratchet.toml").read_text().replace("[run]", '[policy]\nkind = "greedy"\n[run]')
    )
    (project / "ratchet.toml").write_text(spec)
    git(project, "commit", "-qam", "greedy")
    assert ratchet(project, "run").returncode == 0
    rows = experiments(project)
    assert [r["decision"] for r in rows] == ["keep", "keep"]
    assert rows[1]["why"] == "kept: score 9 -> 1 (better by 8; greedy, one measurement each)"
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    assert db.execute("SELECT COUNT(*) FROM measurements").fetchone() == (2,)  # once each


def test_a_proposal_equal_to_an_earlier_one_is_not_measured_again(
    score_project: Callable[..., Path],
) -> None:
    project = score_project("echo 'X = 9' > value.py", max_experiments=3)
    assert ratchet(project, "run").returncode == 0
    rows = experiments(project)
    assert [r["decision"] for r in rows] == ["keep", "discard", "duplicate", "duplicate"]
    assert rows[2]["why"].startswith("the same change as experiment #2 (discard: ")
    assert rows[2]["why"].endswith("not measured again")
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    measured = {e for (e,) in db.execute("SELECT DISTINCT experiment FROM measurements")}
    assert measured == {1, 2}  # the duplicates cost no measurement
    tsv = (project / ".ratchet" / "results.tsv").read_text().splitlines()
    assert tsv[3].split("\t")[3] == "discard"  # autoresearch's status for a duplicate
