"""A human governs a run: review its keeps, approve or reject them, finalize a branch.

One real run per test: X in value.py goes 5 -> 4 -> 3 -> 2 (three keeps, #2 to #4) and
then 1 (a discard, #5). The metric is (X - 2)^2, so the keeps score 4, 1 and 0 against
the baseline's 9. Every patch changes the single line `X = ...`, so a keep replayed
without the keep before it no longer applies.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import git, ratchet

# Each proposal moves X one closer to 2 (and past it), saying so: its rationale.
DECREMENT = (
    f"{sys.executable} -c \"import re; t = open('value.py').read(); "
    "x = int(re.search(r'X = (-?\\d+)', t).group(1)); "
    "open('value.py', 'w').write(f'X = {x - 1}\\n'); print(f'X to {x - 1}')\""
)

LEAD = "Lead Person <lead@example.com>"

# The metric, and a line in $SCORE_LOG (when set) saying where and with which seed it ran.
SCORE = """
import os
from value import X
log = os.environ.get("SCORE_LOG")
if log:
    with open(log, "a") as handle:
        handle.write(f"{os.getcwd()} {os.environ['RATCHET_SEED']} {X}\\n")
print(f"score: {(X - 2) ** 2}")
"""


@pytest.fixture
def project(score_project: Callable[..., Path]) -> Path:
    root = score_project(DECREMENT, max_experiments=4, files={"score.py": SCORE})
    git(root, "config", "user.name", "Lead Person")
    git(root, "config", "user.email", "lead@example.com")
    result = ratchet(root, "run")
    assert result.returncode == 0, result.stderr
    assert [(r["id"], r["value"]) for r in _keeps(root)] == [(1, 9), (2, 4), (3, 1), (4, 0)]
    return root


def _keeps(project: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM experiments WHERE decision = 'keep'")]
    db.close()
    return rows


def _audit(project: Path, *events: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    marks = ", ".join("?" for _ in events)
    rows = db.execute(
        f"SELECT run, event, detail FROM audit WHERE event IN ({marks}) ORDER BY id", events
    ).fetchall()
    db.close()
    return [{"run": run, "event": event, **json.loads(detail)} for run, event, detail in rows]


def _approvals(project: Path) -> list[tuple[int, str, str, str]]:
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    rows = db.execute("SELECT experiment, verdict, who, note FROM approvals ORDER BY id").fetchall()
    db.close()
    return rows


def _review(project: Path) -> dict[str, Any]:
    result = ratchet(project, "review", "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _finalize(project: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = ratchet(project, "finalize", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _untouched(project: Path, main: str, run_branch: str) -> None:
    """The user's branch, index and working tree are as they were; the run branch too."""
    assert git(project, "rev-parse", "main") == main
    assert git(project, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(project, "status", "--porcelain") == ""
    assert (project / "value.py").read_text() == "X = 5\n"
    assert git(project, "rev-parse", "ratchet/default") == run_branch
    assert ".ratchet/finalize" not in git(project, "worktree", "list")
    assert not (project / ".ratchet" / "finalize" / "default").exists()


# review ---------------------------------------------------------------------------------
def test_review_lists_the_keeps_with_deltas_rationales_and_diffs(project: Path) -> None:
    data = _review(project)
    assert data["run"] == "default" and data["metric"] == "score"
    assert data["baseline"]["experiment"] == 1 and data["baseline"]["value"] == 9
    assert data["incumbent"]["experiment"] == 4
    assert data["counts"] == {"approved": 0, "rejected": 0, "pending": 3}
    keeps = data["keeps"]
    assert [k["id"] for k in keeps] == [2, 3, 4]  # the baseline and the discard left out
    assert [k["parent_experiment"] for k in keeps] == [1, 2, 3]
    assert [(k["parent_value"], k["value"], k["delta"]) for k in keeps] == [
        (9, 4, -5),
        (4, 1, -3),
        (1, 0, -1),
    ]
    assert [k["rationale"] for k in keeps] == ["X to 4", "X to 3", "X to 2"]
    assert all(k["state"] == "pending" and k["approval"] is None for k in keeps)
    assert "-X = 5\n+X = 4" in keeps[0]["patch"]
    assert keeps[0]["diffstat"] == [{"path": "value.py", "added": 1, "removed": 1, "binary": False}]
    assert keeps[2]["commit"] == git(project, "rev-parse", "ratchet/default")

    table = ratchet(project, "review").stdout
    assert "3 keeps after the baseline" in table
    assert "9 -> 4" in table and "value.py +1 -1" in table and "pending" in table
    assert "+X = 4" not in table  # the table shows a diffstat; --patch the diffs
    full = ratchet(project, "review", "--patch").stdout
    assert "keep #2" in full and "+X = 4" in full and "+X = 2" in full


def test_approve_and_reject_record_who_when_and_note(project: Path) -> None:
    before = time.time()
    approved = ratchet(project, "review", "approve", "2", "4", "--note", "clean")
    assert approved.returncode == 0, approved.stderr
    assert "approved keep #2" in approved.stdout and "approved keep #4" in approved.stdout
    rejected = ratchet(project, "review", "reject", "3", "--note", "too big")
    assert rejected.returncode == 0, rejected.stderr
    assert "rejected keep #3" in rejected.stdout and "note: too big" in rejected.stdout
    after = time.time()

    assert _approvals(project) == [
        (2, "approved", LEAD, "clean"),
        (4, "approved", LEAD, "clean"),
        (3, "rejected", LEAD, "too big"),
    ]
    keeps = {k["id"]: k for k in _review(project)["keeps"]}
    assert [keeps[i]["state"] for i in (2, 3, 4)] == ["approved", "rejected", "approved"]
    approval = keeps[3]["approval"]
    assert approval["who"] == LEAD and approval["note"] == "too big"
    assert before <= approval["at"] <= after
    audit = _audit(project, "approved", "rejected")
    assert [(a["event"], a["experiment"], a["note"]) for a in audit] == [
        ("approved", 2, "clean"),
        ("approved", 4, "clean"),
        ("rejected", 3, "too big"),
    ]
    assert all(a["run"] == "default" and a["who"] == LEAD for a in audit)
    wide = ratchet(project, "review", env={"COLUMNS": "200"}).stdout
    assert "rejected by Lead Person: too big" in wide

    # the latest decision wins; the earlier one stays in the history
    ratchet(project, "review", "approve", "3")
    keep = {k["id"]: k for k in _review(project)["keeps"]}[3]
    assert keep["state"] == "approved"
    assert [h["verdict"] for h in keep["history"]] == ["rejected", "approved"]


def test_who_is_user_without_a_git_identity(project: Path) -> None:
    git(project, "config", "--unset", "user.name")
    git(project, "config", "--unset", "user.email")
    env = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "USER": "alice"}
    result = ratchet(project, "review", "approve", "2", env=env)
    assert result.returncode == 0, result.stderr
    assert _approvals(project) == [(2, "approved", "alice", "")]


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (["99"], "no experiment #99; 'ratchet log' lists them"),
        (["5"], "experiment #5 is a discard, not a keep; only keeps can be approved or rejected"),
        (["1"], "experiment #1 is the baseline of run 'default'"),
        (["2", "99"], "no experiment #99"),  # all or nothing: #2 is not approved either
    ],
)
def test_only_keeps_can_be_approved(project: Path, ids: list[str], message: str) -> None:
    for action in ("approve", "reject"):
        result = ratchet(project, "review", action, *ids)
        assert result.returncode == 2
        assert result.stderr.startswith(f"ratchet: error: {message}")
        assert len(result.stderr.strip().splitlines()) == 1
    assert _approvals(project) == []
    assert _audit(project, "approved", "rejected") == []


def test_review_and_finalize_name_unknown_runs(project: Path) -> None:
    for command in ("review", "finalize"):
        result = ratchet(project, command, "--name", "nope")
        assert result.returncode == 2
        assert result.stderr == "ratchet: error: no run named 'nope' (runs: default)\n"


# finalize -------------------------------------------------------------------------------
def test_finalize_replays_every_keep_and_measures_the_result(project: Path, tmp_path: Path) -> None:
    main, run_branch = (
        git(project, "rev-parse", "main"),
        git(project, "rev-parse", "ratchet/default"),
    )
    log = tmp_path / "score.log"
    result = ratchet(project, "finalize", env={"SCORE_LOG": str(log)})
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "finalize run default: replayed keeps #2, #3, #4 onto the base" in text
    assert "branch ratchet/default-final at" in text and "replaced" not in text
    assert "score: final 0 (re-measured once, seed 0) vs baseline 9 (#1, -9)" in text
    assert "incumbent 0 (#4, +0)" in text

    # the same tree as the run branch, one commit per keep with its message, on the base
    final = "ratchet/default-final"
    assert git(project, "rev-parse", f"{final}^{{tree}}") == git(
        project, "rev-parse", "ratchet/default^{tree}"
    )
    assert git(project, "log", "--format=%B", f"main..{final}") == git(
        project, "log", "--format=%B", "main..ratchet/default"
    )
    assert git(project, "rev-parse", f"{final}~3") == main

    # measured once, with seed 0, in a temporary worktree of the final commit
    where, seed, x = log.read_text().split()
    assert Path(where) == project / ".ratchet" / "finalize" / "default"
    assert (seed, x) == ("0", "2")
    _untouched(project, main, run_branch)

    [event] = _audit(project, "finalized")
    assert event["branch"] == final and event["commit"] == git(project, "rev-parse", final)
    assert event["replayed"] == [2, 3, 4] and event["skipped"] == []
    assert event["value"] == 0 and event["status"] == "ok" and event["metric"] == "score"


def test_finalize_approved_only_replays_only_approved_keeps(project: Path) -> None:
    ratchet(project, "review", "approve", "2", "3")
    data = _finalize(project, "--approved-only")
    assert data["replayed"] == [2, 3] and data["skipped"] == []
    assert data["left_out"] == [{"experiment": 4, "reason": "not approved"}]
    assert git(project, "show", "ratchet/default-final:value.py") == "X = 3"
    assert data["value"] == 1 and data["delta_vs_baseline"] == -8
    assert data["delta_vs_incumbent"] == 1
    assert git(project, "rev-parse", "ratchet/default-final") == data["commit"]


def test_a_keep_that_no_longer_applies_is_reported_and_skipped(project: Path) -> None:
    main, run_branch = (
        git(project, "rev-parse", "main"),
        git(project, "rev-parse", "ratchet/default"),
    )
    ratchet(project, "review", "approve", "2", "4")  # #4 changes `X = 3`, which #3 wrote
    result = ratchet(project, "finalize", "--approved-only")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "replayed keep #2 onto the base" in text
    assert "skipped keep #4: it no longer applies (conflict in value.py)" in text
    assert "left out: #3 (not approved)" in text
    assert "score: final 4" in text
    assert git(project, "show", "ratchet/default-final:value.py") == "X = 4"
    assert git(project, "rev-list", "--count", "main..ratchet/default-final") == "1"
    [event] = _audit(project, "finalized")
    assert event["replayed"] == [2] and event["skipped"] == [4] and event["left_out"] == [3]
    _untouched(project, main, run_branch)

    # only #3 approved: it does not apply on the base, and the final branch is the base
    ratchet(project, "review", "reject", "2", "4")
    ratchet(project, "review", "approve", "3")
    alone = ratchet(project, "finalize", "--approved-only")
    assert alone.returncode == 0, alone.stderr
    text = " ".join(alone.stdout.split())
    assert "replayed no keep onto the base" in text and "skipped keep #3" in text
    assert git(project, "rev-parse", "ratchet/default-final") == main
    assert "score: final 9" in text


def test_rejected_keeps_are_never_replayed_and_finalize_replaces_its_branch(
    project: Path,
) -> None:
    first = _finalize(project)
    assert first["replaced"] is None and first["replayed"] == [2, 3, 4]
    ratchet(project, "review", "reject", "4", "--note", "overfits")
    result = ratchet(project, "finalize")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "left out: #4 (rejected)" in text
    assert f"replaced the previous ratchet/default-final ({first['commit'][:7]})" in text
    assert git(project, "show", "ratchet/default-final:value.py") == "X = 3"
    # with nothing approved, --approved-only has nothing to replay
    refused = ratchet(project, "finalize", "--approved-only")
    assert refused.returncode == 2
    assert "no keep of run 'default' is approved" in refused.stderr


def test_finalize_refuses_to_move_a_checked_out_final_branch(project: Path) -> None:
    _finalize(project)
    git(project, "checkout", "-q", "ratchet/default-final")
    result = ratchet(project, "finalize")
    assert result.returncode == 2
    assert result.stderr == (
        "ratchet: error: branch ratchet/default-final is checked out; switch to another "
        "branch before finalizing again\n"
    )


def test_a_failed_final_measurement_exits_1_and_is_audited(project: Path) -> None:
    spec = (project / "ratchet.toml").read_text()
    (project / "ratchet.toml").write_text(spec.replace("score.py", "score.py --no-such && false"))
    result = ratchet(project, "finalize")
    assert result.returncode == 1
    text = " ".join(result.stdout.split())
    assert "the spec changed since the run was created" in text
    assert "score: the final measurement failed (crash)" in text
    [event] = _audit(project, "finalized")
    assert event["status"] == "crash" and event["value"] is None
