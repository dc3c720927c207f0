"""`kill -9` of ratchet at any point of an experiment, then `ratchet run` again:
the journal and the branch agree, nothing is lost, nothing is counted twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from processes import adopting, descendants_gone, living_descendants, wait_for

from conftest import GIT_ENV, check_consistent, experiments, git, ratchet

# Each step moves X one closer to 2, so every candidate is a keep until X = 2.
DECREMENT = (
    f"{sys.executable} -c \"import re; t = open('value.py').read(); "
    "x = int(re.search(r'X = (-?\\d+)', t).group(1)); "
    "open('value.py', 'w').write(f'X = {x - 1}\\n'); print(f'X to {x - 1}')\""
)

# Runs ratchet in-process with one internal step wrapped to SIGKILL the process.
DRIVER = """
import os, signal, sys
from ratchet import journal, workspace

point = sys.argv[1]
count = {"n": 0}

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def after(fn, on_call=1):
    def wrapper(*args, **kwargs):
        result = fn(*args, **kwargs)
        count["n"] += 1
        if count["n"] >= on_call:
            die()
        return result
    return wrapper

def before(fn):
    def wrapper(*args, **kwargs):
        die()
    return wrapper

if point == "after-proposal-collected":
    workspace.collect_change = after(workspace.collect_change)
elif point == "after-commit-object-written":
    workspace.commit_candidate = after(workspace.commit_candidate)
elif point == "before-branch-moves":
    workspace.advance_branch = before(workspace.advance_branch)
elif point == "after-decision-recorded":
    journal.Journal.decide = after(journal.Journal.decide, on_call=2)  # 1 is the baseline

from ratchet.cli import main
sys.argv = ["ratchet", "run"]
main()
"""


@pytest.mark.parametrize(
    ("point", "interrupted"),
    [
        ("after-proposal-collected", 1),
        ("after-commit-object-written", 1),
        ("before-branch-moves", 0),  # the journal says keep: the branch is brought up to it
        ("after-decision-recorded", 0),
    ],
)
def test_killed_at_an_internal_step_then_resumed(
    score_project: Callable[..., Path], tmp_path: Path, point: str, interrupted: int
) -> None:
    project = score_project(DECREMENT, max_experiments=3)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    killed = subprocess.run(
        [sys.executable, str(driver), point],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    before = experiments(project)
    result = ratchet(project, "run")
    assert result.returncode == 0, result.stderr
    rows = experiments(project)
    assert [r["decision"] for r in rows].count("interrupted") == interrupted
    decided_before = [r for r in before if r["decision"] is not None]
    assert decided_before == [r for r in rows if r["id"] in {d["id"] for d in decided_before}]
    assert [r["id"] for r in rows][: len(before)] == [r["id"] for r in before]
    counted = [r for r in rows if r["proposer"] != "baseline" and r["decision"] != "interrupted"]
    assert len(counted) == 3  # the budget is honoured across the kill, nothing twice
    assert [r["decision"] for r in counted] == ["keep", "keep", "keep"]
    assert git(project, "show", "ratchet/default:value.py") == "X = 2"
    check_consistent(project)


@pytest.mark.parametrize("stage", ["proposing", "measuring"])
def test_killed_while_a_child_runs_then_resumed(
    score_project: Callable[..., Path], tmp_path: Path, stage: str
) -> None:
    flag = tmp_path / "flag"
    hang = f"if [ ! -f {flag} ]; then touch {flag}; sleep 60; fi"
    if stage == "proposing":
        project = score_project(f"{hang}; {DECREMENT}", max_experiments=3)
    else:
        extra_files = {"measure.sh": f'if [ "$(cat value.py)" != "X = 5" ]; then {hang}; fi\n'}
        project = score_project(DECREMENT, max_experiments=3, files=extra_files)
        spec = (project / "ratchet.toml").read_text()
        spec = spec.replace(
            f'command = "{sys.executable} score.py"',
            f'command = "sh measure.sh && {sys.executable} score.py"',
        )
        (project / "ratchet.toml").write_text(spec)
        git(project, "commit", "-qam", "measure through a script")
    with adopting():  # the child ratchet leaves is re-parented to this test
        proc = subprocess.Popen(
            [sys.executable, "-m", "ratchet", "run"],
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **GIT_ENV},
        )
        # the child hangs, and ratchet has recorded its process group
        wait_for(flag, project / ".ratchet" / "slots" / "0.pid")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stuck = experiments(project)[-1]
        assert stuck["decision"] is None and stuck["stage"] == stage
        assert living_descendants()  # the orphan outlived ratchet
        result = ratchet(project, "run")
        # the orphaned child was found and killed when ratchet came back
        assert descendants_gone()
    assert result.returncode == 0, result.stderr
    rows = experiments(project)
    assert rows[len(rows) - 4]["decision"] == "interrupted"
    assert f"while the experiment was {stage}" in rows[len(rows) - 4]["why"]
    assert "marked interrupted" in result.stdout
    check_consistent(project)
    # the orphaned child was found and killed when ratchet came back
    db = sqlite3.connect(project / ".ratchet" / "journal.db")
    events = [row[0] for row in db.execute("SELECT event FROM audit")]
    db.close()
    assert "orphan-killed" in events


def test_ctrl_c_records_the_experiment_in_flight_as_interrupted(
    score_project: Callable[..., Path], tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    project = score_project(f"touch {flag}; sleep 30", max_experiments=5)
    with adopting():
        proc = subprocess.Popen([sys.executable, "-m", "ratchet", "run"], cwd=project,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **GIT_ENV})  # fmt: skip
        wait_for(flag, project / ".ratchet" / "slots" / "0.pid")  # its group recorded
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert descendants_gone()  # the proposer's process group went with it
    assert proc.returncode == 0, err
    assert "stopped: stopped by SIGINT" in out
    assert "Traceback" not in err
    rows = experiments(project)
    assert rows[-1]["decision"] == "interrupted"
    assert "stopped by SIGINT while the experiment was in flight" in rows[-1]["why"]
    check_consistent(project)
