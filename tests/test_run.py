"""Runs as a whole: stopping, continuing, and the knobs proposer end to end."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import experiments, git, make_project, ratchet

# a proposer that moves X one step towards 2 each time
STEP = (
    f"{sys.executable} -c \"import re; t = open('value.py').read(); "
    "x = int(re.search(r'X = (-?\\d+)', t).group(1)); "
    "open('value.py', 'w').write(f'X = {x - 1}\\n')\""
)


def test_a_stopped_run_continues_up_to_its_budget(score_project: Callable[..., Path]) -> None:
    project = score_project(STEP, max_experiments=2)
    first = ratchet(project, "run")
    assert "stopped: reached max_experiments (2)" in first.stdout
    again = ratchet(project, "run")
    assert "stopped: reached max_experiments (2)" in again.stdout
    assert len(experiments(project)) == 3  # nothing more was run
    more = ratchet(project, "run", "--max-experiments", "4")
    assert "resumed" in more.stdout
    rows = experiments(project)
    assert len(rows) == 5
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5]
    assert git(project, "show", "ratchet/default:value.py") == "X = 2"
    assert rows[-1]["decision"] == "discard"  # X = 1 scores 1, worse than X = 2


def test_patience_stops_the_run(score_project: Callable[..., Path]) -> None:
    project = score_project("true", max_experiments=50)
    spec = (project / "ratchet.toml").read_text().replace("[run]", "[run]\npatience = 3")
    (project / "ratchet.toml").write_text(spec)
    git(project, "commit", "-qam", "patience")
    result = ratchet(project, "run")
    assert "stopped: patience ran out: 3 experiments without a keep" in result.stdout
    assert len(experiments(project)) == 4


def test_target_stops_once_reached(tmp_path: Path) -> None:
    spec = f"""
[scope]
editable = ["value.py"]
[metric]
command = "{sys.executable} score.py"
name = "score"
[run]
max_experiments = 50
target = 1
[proposer]
kind = "command"
command = '''{STEP}'''
"""
    files = {
        "value.py": "X = 5\n",
        "score.py": "from value import X\nprint(f'score: {(X-2)**2}')\n",
    }
    project = make_project(tmp_path / "p", files, spec)
    result = ratchet(project, "run")
    assert "stopped: reached the target: score 1" in result.stdout
    assert len(experiments(project)) == 3  # 9 -> 4 -> 1


def test_max_time_stops_the_run(score_project: Callable[..., Path]) -> None:
    project = score_project("sleep 0.3; true", max_experiments=1000)
    result = ratchet(project, "run", "--max-time", "2s")
    assert "stopped: reached max_time (2s)" in result.stdout
    assert 3 <= len(experiments(project)) <= 10


def test_a_run_named_on_the_command_line_gets_its_own_branch(
    score_project: Callable[..., Path],
) -> None:
    project = score_project(STEP)
    ratchet(project, "run", "--name", "night-1")
    ratchet(project, "run", "--name", "night-2")
    assert git(project, "rev-parse", "ratchet/night-1") != git(project, "rev-parse", "main")
    assert git(project, "rev-parse", "ratchet/night-2") != git(project, "rev-parse", "main")
    status = json.loads(ratchet(project, "status", "--name", "night-1", "--json").stdout)
    assert status["branch"] == "ratchet/night-1"


def test_a_branch_without_a_journal_entry_is_refused(score_project: Callable[..., Path]) -> None:
    project = score_project(STEP)
    git(project, "branch", "ratchet/default")
    result = ratchet(project, "run")
    assert result.returncode == 2
    assert "branch ratchet/default exists but the journal has no run 'default'" in result.stderr


KNOBS_FILES = {
    "model.py": "A = 0.5  # ratchet: knob float -3..3\nB = 4  # ratchet: knob int 0..8\n"
    "C = 'x'  # ratchet: knob choice x|y\n",
    "score.py": "from model import A, B, C\n"
    "print(f'loss: {(A - 1.2) ** 2 + (B - 2) ** 2 + (0 if C == \"y\" else 1):.6f}')\n",
}
KNOBS_SPEC = f"""
[scope]
editable = ["model.py"]
protected = ["score.py"]
[metric]
command = "{sys.executable} score.py"
name = "loss"
[run]
max_experiments = 15
[proposer]
kind = "knobs"
seed = 3
"""


def test_knobs_tune_the_annotated_constants(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", KNOBS_FILES, KNOBS_SPEC)
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    rows = experiments(project)
    assert rows[0]["value"] == pytest.approx(0.49 + 4 + 1)
    kept = [r for r in rows[1:] if r["decision"] == "keep"]
    assert kept, "the knobs proposer found no improvement"
    assert rows[-1]["proposer"] == "knobs"
    assert all(r["files"] in ('["model.py"]', "[]") for r in rows[1:])
    params = json.loads(rows[1]["meta"])["params"]
    assert set(params) == {"model.py:A", "model.py:B", "model.py:C"}
    best = min(r["value"] for r in kept)
    assert best < rows[0]["value"]
    # what the branch holds is the best keep's values
    final = git(project, "show", "ratchet/default:model.py")
    assert final.splitlines()[0].endswith("# ratchet: knob float -3..3")
    # the study was told the file's values first: a resumed run replays the journal
    more = ratchet(project, "run", "--max-experiments", "20")
    assert more.returncode == 0, more.stderr
    assert len(experiments(project)) == 21
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    assert db.execute("SELECT COUNT(*) FROM experiments WHERE decision IS NULL").fetchone() == (0,)


def _with_run_keys(project: Path, keys: str) -> None:
    spec = (project / "ratchet.toml").read_text().replace("[run]", f"[run]\n{keys}")
    (project / "ratchet.toml").write_text(spec)
    git(project, "commit", "-qam", "stop conditions")


def test_max_cost_usd_stops_the_run(score_project: Callable[..., Path]) -> None:
    pay = (
        'echo \'{"rationale": "paid", "cost_usd": 0.4, "tokens": 1000}\' > '
        "$RATCHET_PROPOSAL && echo 'X = 9' > value.py"
    )
    project = score_project(pay, max_experiments=50)
    _with_run_keys(project, "max_cost_usd = 1.0")
    result = ratchet(project, "run")
    assert "stopped: reached max_cost_usd ($1.20 of $1)" in result.stdout
    rows = experiments(project)
    assert len(rows) == 4 and rows[1]["cost_usd"] == 0.4 and rows[1]["cost_tokens"] == 1000
    assert json.loads(ratchet(project, "status", "--json").stdout)["cost_usd"] == pytest.approx(1.2)


def test_give_up_after_consecutive_failures(score_project: Callable[..., Path]) -> None:
    project = score_project("echo 'X = 1 / 0' > value.py", max_experiments=50)
    _with_run_keys(project, "give_up_after = 3")
    result = ratchet(project, "run")
    assert result.returncode == 1  # a run that gave up failed, as the README says
    assert "stopped: gave up: 3 experiments in a row produced no measurement" in result.stdout
    # the same crashing change, proposed again, is a duplicate: no measurement either
    assert [r["decision"] for r in experiments(project)] == [
        "keep", "crash", "duplicate", "duplicate",
    ]  # fmt: skip
    # and it stays stopped: the streak is read back from the journal
    again = ratchet(project, "run")
    assert "gave up: 3 experiments in a row" in again.stdout
    assert len(experiments(project)) == 4


def test_every_state_change_is_in_the_audit_table(score_project: Callable[..., Path]) -> None:
    project = score_project(STEP, max_experiments=2)
    ratchet(project, "run")
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    events = [
        (e, json.loads(d)) for e, d in db.execute("SELECT event, detail FROM audit ORDER BY id")
    ]
    names = [e for e, _ in events]
    assert names[:2] == ["run-created", "run-started"]
    assert names[-1] == "run-stopped"
    assert names.count("decided") == 3  # the baseline and two experiments
    started = dict(events)["run-started"]
    assert len(started["spec_digest"]) == 16
    decided = [d for e, d in events if e == "decided"]
    assert [d["decision"] for d in decided] == ["keep", "keep", "keep"]
    assert decided[1]["commit"] == experiments(project)[1]["commit_sha"]
    assert dict(events)["run-stopped"]["reason"] == "reached max_experiments (2)"
