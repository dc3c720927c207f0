"""`ratchet finalize` holds the project's run lock: a run is refused while it works, and it
is refused while a run (or another finalize) holds the project, in one line naming the
holder and its process, exit 2, with no final branch made."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from processes import wait_until

from conftest import GIT_ENV, git, ratchet
from ratchet.runs import run_lock

DECREMENT = (
    f"{sys.executable} -c \"import re; t = open('value.py').read(); "
    "x = int(re.search(r'X = (-?\\d+)', t).group(1)); "
    "open('value.py', 'w').write(f'X = {x - 1}\\n'); print(f'X to {x - 1}')\""
)

# Measured in finalize's worktree (.ratchet/finalize/<run>), the metric says it started
# and waits until the test lets it go: finalize is then holding the lock.
GATED_SCORE = """
import os, pathlib, time
from value import X
gate = pathlib.Path({gate!r})
if "/finalize/" in os.getcwd():
    (gate / "started").write_text(str(os.getpid()))
    deadline = time.monotonic() + 110
    while not (gate / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
print(f"score: {{(X - 2) ** 2}}")
"""


def _wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 60) -> None:
    wait_until(lambda: path.exists() or process.poll() is not None, f"{path} to appear", timeout)
    assert path.exists(), process.communicate()


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_finalize_is_refused_while_a_run_holds_the_project(
    score_project: Callable[..., Path],
) -> None:
    project = score_project(DECREMENT, max_experiments=2)
    assert ratchet(project, "run").returncode == 0
    with run_lock(project / ".ratchet", "default"):  # this test's process is the run
        refused = ratchet(project, "finalize")
    assert refused.returncode == 2
    line = _one_line(refused)
    assert line.startswith("ratchet: error: cannot finalize now: run 'default' is running")
    assert f"(process {os.getpid()})" in line
    assert git(project, "branch", "--list", "ratchet/default-final") == ""
    done = ratchet(project, "finalize")  # the lock let go of: it works
    assert done.returncode == 0, done.stderr
    assert git(project, "branch", "--list", "ratchet/default-final").strip()


def test_a_run_is_refused_while_finalize_works(
    score_project: Callable[..., Path], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    # the gated measurement waits on the two commands below: a budget they cannot
    # outlast on a loaded machine (20 s could, and finalize then failed its measurement)
    project = score_project(
        DECREMENT, max_experiments=2, budget="120s",
        files={"score.py": GATED_SCORE.format(gate=str(gate))},
    )  # fmt: skip
    assert ratchet(project, "run").returncode == 0
    finalizing = subprocess.Popen(
        [sys.executable, "-m", "ratchet", "finalize"], cwd=project, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **GIT_ENV},
    )  # fmt: skip
    try:
        _wait_for(gate / "started", finalizing)
        run = ratchet(project, "run", "--max-experiments", "4")
        again = ratchet(project, "finalize")
    finally:
        (gate / "release").write_text("go")
        out, err = finalizing.communicate(timeout=120)
    assert finalizing.returncode == 0, out + err
    assert run.returncode == 2
    line = _one_line(run)
    assert "'ratchet finalize' of run 'default' is working in this project (process " in line
    assert f"(process {finalizing.pid})" in line
    assert again.returncode == 2 and "cannot finalize now" in _one_line(again)
    assert "branch ratchet/default-final at" in out
    resumed = ratchet(project, "run", "--max-experiments", "4")  # the lock is free again
    assert resumed.returncode == 0, resumed.stderr
